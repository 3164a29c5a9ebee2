"""rate-limiting: limit how many requests a consumer, credential, IP... makes per second to year."""
