"""prometheus: Kong's request metrics (status codes, latencies, bandwidth) on the Status API's /metrics."""
