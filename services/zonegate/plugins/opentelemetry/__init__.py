"""opentelemetry: W3C/B3 trace propagation and OTLP/HTTP span export, as Kong's plugin of that name."""
