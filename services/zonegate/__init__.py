"""Zonegate: a Kong-compatible API gateway whose control and data planes talk over an mTLS NATS bus."""

__version__ = "0.1.0"
