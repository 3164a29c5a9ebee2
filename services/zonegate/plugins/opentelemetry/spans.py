"""Spans as plain tuples, their ids, and Kong's sampler. Pure: no I/O.

A request makes at most two spans (``kong``, the server span, and ``kong.balancer``, the client
span that called the upstream); they are tuples until the exporter turns a batch into protobuf,
so the request pays for a few integers and one small tuple of attributes, not for an SDK span.
"""

from __future__ import annotations

import random
from typing import Final, NamedTuple

# OTLP's SpanKind and Status.code values.
KIND_SERVER: Final = 2
KIND_CLIENT: Final = 3
STATUS_UNSET: Final = 0
STATUS_ERROR: Final = 2

_SAMPLING_BOUND: Final = 1 << 64

AttributeValue = str | int | float | bool


class Span(NamedTuple):
    trace_id: int  # 128 bits
    span_id: int  # 64 bits
    parent_id: int  # 0: a root span
    name: str
    kind: int
    start_ns: int  # Unix epoch nanoseconds
    end_ns: int
    attributes: tuple[tuple[str, AttributeValue], ...]
    status: int = STATUS_UNSET


# Trace ids need to be unique, not secret: the Mersenne Twister is enough (the OpenTelemetry
# SDK's RandomIdGenerator says the same) and far cheaper than os.urandom's system call.
_bits = random.getrandbits


def new_trace_id() -> int:
    return _bits(128) or 1  # all zero is invalid


def new_span_id() -> int:
    return _bits(64) or 1


def sampled_by_rate(trace_id: int, rate: float) -> bool:
    """Kong's probability sampler: the first 8 bytes of the trace id, read as a little-endian
    integer (as Kong's FFI cast reads them on x86), below ``rate`` of 2**64. So every hop that
    samples this way at the same rate takes the same decision for the same trace."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    high = (trace_id >> 64).to_bytes(8, "big")
    return int.from_bytes(high, "little") < rate * _SAMPLING_BOUND


def should_sample(parent_sampled: bool | None, trace_id: int, rate: float) -> bool:
    """Kong's ``get_sampling_decision``: a caller that decided not to sample is followed; else
    the rate decides (for a caller that did sample too, by its trace id)."""
    if parent_sampled is False:
        return False
    return sampled_by_rate(trace_id, rate)
