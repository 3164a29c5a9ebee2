"""http-log: Kong's serialized request log, batched and sent to an HTTP endpoint in the background."""
