"""bot-detection: refuse requests whose User-Agent is a known bot or matches a deny pattern."""
