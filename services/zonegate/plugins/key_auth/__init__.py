"""key-auth: authenticate with an API key from a header, the query string or the body."""
