"""request-transformer: rewrite the request before it goes upstream (headers, query, body, method, path)."""
