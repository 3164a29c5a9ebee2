"""file-log: Kong's serialized request log, one JSON line per request, appended to a file."""
