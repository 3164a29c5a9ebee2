"""rate-limiting's config (Kong's ``kong/plugins/rate-limiting/schema.lua``, 3.x): same fields,
defaults and checks.

Choices where Zonegate differs:

- ``policy = cluster`` shares the counters between every data plane through the bus (a
  JetStream KV bucket), where Kong needs a database and removes ``cluster`` on data planes.
- ``policy = redis`` is refused with an error that names ``cluster`` instead: Zonegate talks to
  no Redis, and silently counting elsewhere would surprise. The ``redis`` record (and Kong's
  older ``redis_*`` fields) are accepted so Kong exports load, and ignored.
- ``limit_by = consumer-group`` is not offered: Zonegate has no consumer groups yet.
"""

from __future__ import annotations

from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t
from zonegate.core.errors import ENTITY_KEY
from zonegate.core.schema import at_least_one_of, conditional, equals, must_be_set

NAME: Final = "rate-limiting"

# Kong's order, shortest first: a longer period may not have a lower limit.
PERIODS: Final = ("second", "minute", "hour", "day", "month", "year")
LIMIT_BY: Final = ("consumer", "credential", "ip", "service", "header", "path")
POLICIES: Final = ("local", "cluster", "redis")
REDIS_REFUSED: Final = (
    "the redis policy is not supported by Zonegate: use cluster, whose counters every data plane "
    "shares over the bus"
)


def _num(value: float) -> str:
    return f"{value:.1f}"


def _periods_order(config: dict[str, Any]) -> dict[str, Any]:
    """Kong's ``validate_periods_order``, with Kong's message."""
    for i, lower in enumerate(PERIODS):
        low = config.get(lower)
        if low is None:
            continue
        for upper in PERIODS[i + 1 :]:
            high = config.get(upper)
            if high is not None and high < low:
                message = (
                    f"The limit for {upper}({_num(high)}) cannot be lower than "
                    f"the limit for {lower}({_num(low)})"
                )
                return {ENTITY_KEY: [message]}
    return {}


def _not_redis(value: Any) -> str | None:
    return REDIS_REFUSED if value == "redis" else None


def _limit(period: str) -> tuple[str, f.Field]:
    return (period, f.number(f.gt(0), description=f"Requests allowed per {period}."))


CONFIG: Final = f.record(
    *(_limit(period) for period in PERIODS),
    (
        "limit_by",
        f.string(
            f.one_of(*LIMIT_BY),
            default="consumer",
            description="What is counted: consumer, credential, ip, service, header or path "
            "(falls back to the client IP when it is missing).",
        ),
    ),
    ("header_name", t.header_name(description="The header counted when limit_by is header.")),
    ("path", t.path(description="The path counted when limit_by is path.")),
    (
        "policy",
        f.string(
            f.one_of(*POLICIES),
            _not_redis,
            default="local",
            len_min=0,
            description="local: counters in each proxy process; cluster: shared by every data "
            "plane through the bus.",
        ),
    ),
    (
        "fault_tolerant",
        f.boolean(
            required=True,
            default=True,
            description="When the cluster counters cannot be reached, count locally and proxy "
            "(else answer 500).",
        ),
    ),
    ("redis", f.any_value(description="Kong's Redis settings: accepted and ignored.")),
    *(
        (name, f.any_value(description="Kong's older Redis setting: accepted and ignored."))
        for name in (
            "redis_host",
            "redis_port",
            "redis_password",
            "redis_username",
            "redis_ssl",
            "redis_ssl_verify",
            "redis_server_name",
            "redis_timeout",
            "redis_database",
        )
    ),
    (
        "hide_client_headers",
        f.boolean(required=True, default=False, description="Do not send the rate-limit headers."),
    ),
    (
        "error_code",
        f.number(f.gt(0), default=429, description="The status of a refused request."),
    ),
    (
        "error_message",
        f.string(default="API rate limit exceeded", description="The message of a refused request."),
    ),
    (
        "sync_rate",
        f.number(
            required=True,
            default=-1,
            description="Kong's counter sync interval; Zonegate's cluster counters are always "
            "synchronous (-1), other values are accepted and behave the same.",
        ),
    ),
    required=True,
    default={},
    record_checks=(_periods_order,),
)

ENTITY_CHECKS: Final = (
    at_least_one_of(*(f"config.{period}" for period in PERIODS)),
    conditional("config.limit_by", equals("header"), "config.header_name", must_be_set),
    conditional("config.limit_by", equals("path"), "config.path", must_be_set),
)
