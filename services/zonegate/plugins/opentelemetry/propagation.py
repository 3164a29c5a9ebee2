"""Trace context in HTTP headers: read the caller's, write ours (Kong's ``tracing.propagation``).

Pure: no I/O, ids as integers (a trace id is 128 bits, a span id 64). Formats, by Kong's names:

- ``w3c``: ``traceparent: 00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>``; bit 0 of
  the flags is "sampled". Only version ``00`` is read, all-zero ids are refused (as Kong does).
- ``b3``: Zipkin's ``X-B3-TraceId`` / ``X-B3-SpanId`` / ``X-B3-ParentSpanId`` / ``X-B3-Sampled``
  / ``X-B3-Flags`` headers, or the single ``b3: <trace>-<span>[-<sampled>[-<parent>]]`` header
  (also found as ``tracestate: b3=...``). A 64-bit b3 trace id is kept 64-bit when written back
  as b3, and zero-padded to 128 bits for everything else.
- ``b3-single``: writing only; reading ``b3`` covers both shapes.

Kong's other formats (``jaeger``, ``ot``, ``datadog``, ``aws``, ``gcp``) are refused by the
schema; :data:`KONG_EXTRACT_ORDER` still lists them so the order of the legacy ``header_type``
mapping reads as Kong's.

Kong reads with the first configured extractor that finds a context. Here an extractor "finds"
one only when it yields a trace id or a sampling decision: Kong's b3 extractor also claims a
request that merely carries a W3C ``tracestate``, which would hide its ``traceparent``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

TRACE_ID_MASK: Final = (1 << 128) - 1
SPAN_ID_MASK: Final = (1 << 64) - 1

W3C: Final = "w3c"
B3: Final = "b3"
B3_SINGLE: Final = "b3-single"
PRESERVE: Final = "preserve"
IGNORE: Final = "ignore"

# Every format Kong knows, and the ones Zonegate reads and writes.
KONG_FORMATS: Final = ("w3c", "b3", "b3-single", "jaeger", "ot", "datadog", "aws", "gcp")
EXTRACTORS: Final = (W3C, B3)
INJECTORS: Final = (W3C, B3, B3_SINGLE)
# Kong's extraction order for the legacy ``header_type`` values.
KONG_EXTRACT_ORDER: Final = ("b3", "w3c", "jaeger", "ot", "datadog", "aws", "gcp")

# The request headers any extractor reads, lower-cased (what one pass over the headers keeps).
READ_HEADERS: Final = frozenset(
    {
        b"traceparent",
        b"b3",
        b"tracestate",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"x-b3-sampled",
        b"x-b3-flags",
    }
)
# What the injectors write, to clear stale copies first.
WRITTEN_HEADERS: Final[Mapping[str, tuple[str, ...]]] = {
    W3C: ("traceparent",),
    B3: ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"),
    B3_SINGLE: ("b3",),
}

_HEX: Final = frozenset("0123456789abcdefABCDEF")


class Extracted(NamedTuple):  # tuples: one of each per request, and cheaper to build
    """A caller's trace context. ``span_id`` is the caller's span (the parent of ours)."""

    fmt: str  # the extractor that found it: what ``preserve`` writes back
    trace_id: int | None = None
    span_id: int | None = None
    parent_id: int | None = None  # b3's parent of ``span_id``
    sampled: bool | None = None  # None: the caller did not decide
    debug: bool = False  # b3 debug ("d", X-B3-Flags: 1): forces sampling, written back
    single_header: bool = False  # b3 came as the single ``b3`` header
    trace_id_bytes: int = 16  # 8 for a 64-bit b3 trace id


class Outgoing(NamedTuple):
    """The context written upstream: our trace, with the span that called the upstream."""

    trace_id: int
    span_id: int
    parent_id: int | None
    sampled: bool
    debug: bool = False
    trace_id_bytes: int = 16


@dataclass(frozen=True, slots=True)
class Plan:
    """What to read, clear and write (Kong's ``propagation`` record, legacy fields mapped)."""

    extract: tuple[str, ...]
    inject: tuple[str, ...]  # formats, or ``preserve``
    clear: tuple[str, ...]  # header names
    default_format: str


def plan_from_config(config: Mapping[str, Any]) -> Plan:
    """Kong's ``get_plugin_params``: ``propagation`` as given when any of ``extract``, ``inject``
    or ``clear`` is set, else the legacy ``header_type`` mapped as Kong maps it."""
    propagation = config.get("propagation") or {}
    default_format = propagation.get("default_format") or W3C
    extract = propagation.get("extract")
    inject = propagation.get("inject")
    clear = propagation.get("clear")
    if extract is None and inject is None and clear is None:
        header_type = config.get("header_type")
        if header_type == PRESERVE:
            extract, inject = list(KONG_EXTRACT_ORDER), [PRESERVE]
        elif header_type == IGNORE:
            inject = [default_format]
        elif header_type is not None:
            extract, inject = list(KONG_EXTRACT_ORDER), [PRESERVE, header_type]
    return Plan(
        extract=tuple(fmt for fmt in extract or () if fmt in EXTRACTORS),
        inject=tuple(inject or ()),
        clear=tuple(clear or ()),
        default_format=default_format,
    )


# -- reading -------------------------------------------------------------------------------------


def tracing_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's tracing headers by lower-cased name (the first of each)."""
    found: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in READ_HEADERS:
            found.setdefault(lowered.decode("latin-1"), value.decode("latin-1").strip())
    return found


def _hex_id(text: str, *sizes: int) -> int | None:
    """An id of one of ``sizes`` hex digits, or None (malformed or all zero)."""
    if len(text) not in sizes or not _HEX.issuperset(text):
        return None
    value = int(text, 16)
    return value or None


def parse_traceparent(value: str) -> tuple[int, int, bool] | None:
    """``(trace_id, parent_span_id, sampled)`` of a version-00 ``traceparent``, or None."""
    parts = value.split("-")
    if len(parts) != 4 or parts[0] != "00":
        return None
    trace_id = _hex_id(parts[1], 32)
    span_id = _hex_id(parts[2], 16)
    flags = parts[3]
    if trace_id is None or span_id is None or len(flags) != 2 or not _HEX.issuperset(flags):
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id & TRACE_ID_MASK:032x}-{span_id & SPAN_ID_MASK:016x}-{'01' if sampled else '00'}"


def _extract_w3c(headers: Mapping[str, str]) -> Extracted | None:
    value = headers.get("traceparent")
    parsed = parse_traceparent(value) if value else None
    if parsed is None:
        return None
    trace_id, span_id, sampled = parsed
    return Extracted(W3C, trace_id, span_id, None, sampled)


def parse_b3_single(value: str) -> Extracted | None:
    """The ``b3`` header: ``<trace>-<span>[-<sampled>[-<parent>]]``, or a bare ``0``/``1``/``d``.
    None when malformed."""
    if value in ("0", "1", "d"):
        return Extracted(B3, sampled=value != "0", debug=value == "d", single_header=True)
    parts = value.split("-")
    if len(parts) < 2 or len(parts) > 4:
        return None
    trace_id = _hex_id(parts[0], 16, 32)
    span_id = _hex_id(parts[1], 16)
    flag = parts[2] if len(parts) > 2 else ""
    parent_id = _hex_id(parts[3], 16) if len(parts) > 3 else None
    if trace_id is None or span_id is None or flag not in ("", "0", "1", "d"):
        return None
    if len(parts) > 3 and parent_id is None:
        return None
    return Extracted(
        B3,
        trace_id,
        span_id,
        parent_id,
        sampled=None if flag == "" else flag != "0",
        debug=flag == "d",
        single_header=True,
        trace_id_bytes=len(parts[0]) // 2,
    )


def _b3_single_value(headers: Mapping[str, str]) -> str | None:
    value = headers.get("b3")
    if value:
        return value
    state = headers.get("tracestate", "")
    return state[3:] if state.startswith("b3=") and len(state) > 3 else None


_B3_HEADERS: Final = frozenset(
    {"b3", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"}
)


def _extract_b3(headers: Mapping[str, str]) -> Extracted | None:
    if _B3_HEADERS.isdisjoint(headers):
        return None
    single: Extracted | None = None
    single_value = _b3_single_value(headers)
    if single_value is not None:
        single = parse_b3_single(single_value)
    sampled = single.sampled if single is not None else None
    debug = single.debug if single is not None else False
    if sampled is None:
        flag = headers.get("x-b3-sampled")
        if flag in ("1", "true"):
            sampled = True
        elif flag in ("0", "false"):
            sampled = False
    if headers.get("x-b3-flags") == "1":
        debug = True
        if sampled is None or single is None:
            sampled = True
    trace_id: int | None
    span_id: int | None
    parent_id: int | None
    if single is not None and single.trace_id is not None:
        trace_id, span_id, parent_id = single.trace_id, single.span_id, single.parent_id
        trace_bytes = single.trace_id_bytes
    else:
        raw_trace = headers.get("x-b3-traceid")
        raw_span = headers.get("x-b3-spanid")
        raw_parent = headers.get("x-b3-parentspanid")
        trace_id = _hex_id(raw_trace, 16, 32) if raw_trace is not None else None
        span_id = _hex_id(raw_span, 16) if raw_span is not None else None
        parent_id = _hex_id(raw_parent, 16) if raw_parent is not None else None
        # One malformed id spoils the set (Kong's invalid_id).
        if (
            (raw_trace is not None and trace_id is None)
            or (raw_span is not None and span_id is None)
            or (raw_parent is not None and parent_id is None)
        ):
            trace_id = span_id = parent_id = None
        trace_bytes = len(raw_trace) // 2 if trace_id is not None and raw_trace is not None else 16
    if trace_id is None:
        span_id = parent_id = None
    if trace_id is None and sampled is None:
        return None
    return Extracted(
        B3,
        trace_id,
        span_id,
        parent_id,
        sampled,
        debug,
        single_header=single is not None,
        trace_id_bytes=trace_bytes,
    )


_EXTRACT: Final = {W3C: _extract_w3c, B3: _extract_b3}


def extract(headers: Mapping[str, str], formats: Iterable[str]) -> Extracted | None:
    """The context of the first format in ``formats`` that finds one in ``headers`` (as
    returned by :func:`tracing_headers`)."""
    if not headers:
        return None
    for fmt in formats:
        found = _EXTRACT[fmt](headers)
        if found is not None:
            return found
    return None


# -- writing -------------------------------------------------------------------------------------


def _b3_trace_id(context: Outgoing) -> str:
    if context.trace_id_bytes == 8:
        return f"{context.trace_id & SPAN_ID_MASK:016x}"
    return f"{context.trace_id & TRACE_ID_MASK:032x}"


def headers_for(fmt: str, context: Outgoing) -> list[tuple[str, str]]:
    """The headers of one format (Kong's injectors)."""
    if fmt == W3C:
        return [("traceparent", format_traceparent(context.trace_id, context.span_id, context.sampled))]
    if fmt == B3:
        headers = [("x-b3-traceid", _b3_trace_id(context)), ("x-b3-spanid", f"{context.span_id:016x}")]
        if context.parent_id is not None:
            headers.append(("x-b3-parentspanid", f"{context.parent_id:016x}"))
        if context.debug:
            headers.append(("x-b3-flags", "1"))
        else:
            headers.append(("x-b3-sampled", "1" if context.sampled else "0"))
        return headers
    if fmt == B3_SINGLE:
        flag = "d" if context.debug else ("1" if context.sampled else "0")
        value = f"{_b3_trace_id(context)}-{context.span_id:016x}-{flag}"
        if context.parent_id is not None:
            value += f"-{context.parent_id:016x}"
        return [("b3", value)]
    raise ValueError(f"unknown trace context format: {fmt}")


def inject_formats(plan: Plan, found: Extracted | None) -> tuple[str, ...]:
    """The formats to write, ``preserve`` resolved to the caller's, each once, in order."""
    formats: list[str] = []
    for fmt in plan.inject:
        if fmt == PRESERVE:
            fmt = found.fmt if found is not None else plan.default_format
            if fmt == B3 and found is not None and found.single_header:
                fmt = B3_SINGLE
        if fmt not in formats:
            formats.append(fmt)
    return tuple(formats)
