"""Kong's ``kong.log.serialize()`` for one finished exchange: what log plugins send or count.

Built only when a log-phase plugin asks for it (``PluginContext.serialize()``, cached per
request), never on the hot path of requests without logging plugins. The shape is Kong's:
``request{method,uri,url,size,querystring,headers}``, ``response{status,size,headers}``,
``latencies{request,kong,proxy}`` (milliseconds; ``proxy`` is -1 when no upstream answered),
``route``, ``service``, ``consumer``, ``client_ip``, ``started_at`` (epoch milliseconds),
``upstream_uri``, ``tries``, ``source`` (``service`` when the upstream answered, else ``kong``).

Sizes are Kong's ``request_length`` and ``bytes_sent``: the head as forwarded (rebuilt from the
headers, so within a few bytes of the wire) plus the body bytes counted by the proxy.
Credentials in ``Authorization`` and ``Proxy-Authorization`` are redacted, as Kong does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

from zonegate.plugins.api import ExchangeMeasures, PluginContext

if TYPE_CHECKING:
    from zonegate.data_plane.exchange import Exchange

REDACTED: Final = frozenset({"authorization", "proxy-authorization"})


def _headers(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Lower-cased names; a repeated header becomes a list (Kong's ``ngx.req.get_headers``)."""
    found: dict[str, Any] = {}
    for name, value in pairs:
        key = name.lower()
        if key in REDACTED:
            value = "REDACTED"
        previous = found.get(key)
        if previous is None:
            found[key] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            found[key] = [previous, value]
    return found


def _query(raw: bytes) -> dict[str, Any]:
    """Kong's querystring: a key alone is ``true``, a repeated key a list."""
    parsed = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
    found: dict[str, Any] = {}
    for key, values in parsed.items():
        cleaned: list[Any] = [v if v != "" else True for v in values]
        found[key] = cleaned[0] if len(cleaned) == 1 else cleaned
    return found


def _head_size(first_line: int, pairs: list[tuple[bytes, bytes]]) -> int:
    return first_line + sum(len(k) + len(v) + 4 for k, v in pairs) + 2


def response_source(exchange: Exchange) -> str:
    """Kong's ``kong.response.get_source()`` folded as its prometheus plugin does."""
    return "service" if exchange.upstream_status else "kong"


def _latencies(exchange: Exchange, now: float) -> tuple[int, int, int]:
    """(request, proxy, kong) in ms, Kong's way: proxy is -1 when no upstream answered."""
    total = max(int((now - exchange.started) * 1000), 0)
    if exchange.upstream_sent_at and exchange.upstream_first_byte:
        proxy = max(int((exchange.upstream_first_byte - exchange.upstream_sent_at) * 1000), 0)
        return total, proxy, max(total - proxy, 0)
    return total, -1, total


def _sizes(exchange: Exchange, ctx: PluginContext) -> tuple[int, int]:
    """(request, response) sizes: head and body bytes as they crossed the client connection."""
    request_line = len(exchange.method) + len(exchange.url) + 11
    request_size = _head_size(request_line, exchange.headers) + exchange.body_bytes_in
    response_size = 17 + ctx.response_head_bytes() + 2 + exchange.body_bytes_out
    return request_size, response_size


def measures(exchange: Exchange, ctx: PluginContext) -> ExchangeMeasures:
    """``serialize``'s numbers alone (a metrics plugin needs nothing else)."""
    request_ms, proxy_ms, kong_ms = _latencies(exchange, time.monotonic())
    request_size, response_size = _sizes(exchange, ctx)
    return ExchangeMeasures(
        status=exchange.status or ctx.response_status,
        source=response_source(exchange),
        request_size=request_size,
        response_size=response_size,
        request_ms=request_ms,
        proxy_ms=proxy_ms,
        kong_ms=kong_ms,
    )


def serialize(exchange: Exchange, ctx: PluginContext) -> dict[str, Any]:
    now = time.monotonic()
    started = exchange.started
    total, proxy, kong = _latencies(exchange, now)
    client = exchange.client
    host = exchange.host or ""
    path = exchange.url.decode("latin-1")
    method = exchange.method.decode("latin-1")
    url = f"{client.scheme}://{host}{path}"
    response_pairs = ctx.response_header_items()
    request_size, response_size = _sizes(exchange, ctx)
    match = exchange.match
    upstream_uri = match.upstream_path if match is not None else ""
    if upstream_uri and exchange.query:
        upstream_uri += "?" + exchange.query.decode("latin-1")
    tries: list[dict[str, Any]] = []
    target = exchange.last_target or exchange.target
    if target is not None:
        tries.append({"ip": target.host, "port": target.port, "balancer_latency": 0})
    elif exchange.upstream_sent_at and exchange.service is not None:
        tries.append({"ip": exchange.service.host, "port": exchange.service.port, "balancer_latency": 0})
    entry: dict[str, Any] = {
        "request": {
            "method": method,
            "uri": path,
            "url": url,
            "size": request_size,
            "querystring": _query(exchange.query),
            "headers": _headers(
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in exchange.headers]
                + ([("host", host)] if host else [])
            ),
            "id": exchange.request_id,
        },
        "response": {
            "status": exchange.status or ctx.response_status,
            "size": response_size,
            "headers": _headers(response_pairs),
        },
        "latencies": {"request": total, "kong": kong, "proxy": proxy},
        "tries": tries,
        "client_ip": ctx.client_ip,
        "started_at": int((time.time() - (now - started)) * 1000),
        "upstream_uri": upstream_uri,
        "source": response_source(exchange),
        "route": dict(ctx.route),
        "workspace": "default",
    }
    if ctx.service is not None:
        entry["service"] = dict(ctx.service)
    if ctx.consumer is not None:
        entry["consumer"] = dict(ctx.consumer)
    if ctx.credential is not None:
        entry["authenticated_entity"] = {"id": ctx.credential.get("id")}
    return entry
