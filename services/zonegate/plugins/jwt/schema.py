"""jwt's config (Kong's ``kong/plugins/jwt/schema.lua``, 3.7+): same fields, defaults and checks."""

from __future__ import annotations

from typing import Any, Final

from zonegate.core import fields as f
from zonegate.core.schema import conditional

NAME: Final = "jwt"
NO_CONSUMER: Final = True

CONFIG: Final = f.record(
    (
        "uri_param_names",
        f.set_of(f.string(), default=["jwt"], description="Query parameters to look for a token in."),
    ),
    (
        "cookie_names",
        f.set_of(f.string(), default=[], description="Cookies to look for a token in."),
    ),
    (
        "key_claim_name",
        f.string(
            default="iss",
            description="The claim (in the payload, else the header) naming the credential's key.",
        ),
    ),
    (
        "secret_is_base64",
        f.boolean(
            required=True,
            default=False,
            description="The credential's secret is base64-encoded; tokens are signed with the decoded one.",
        ),
    ),
    (
        "claims_to_verify",
        f.set_of(
            f.string(f.one_of("exp", "nbf")),
            description="Registered claims to verify: exp (not expired), nbf (already valid).",
        ),
    ),
    ("anonymous", f.string(description="Consumer id or username to use when authentication fails.")),
    (
        "run_on_preflight",
        f.boolean(required=True, default=True, description="Authenticate OPTIONS preflight requests too."),
    ),
    (
        "maximum_expiration",
        f.number(
            f.between(0, 31536000),
            default=0,
            description="The longest lifetime (exp minus now, in seconds) a token may have; 0: no limit.",
        ),
    ),
    (
        "header_names",
        f.set_of(
            f.string(),
            default=["authorization"],
            description="Headers to look for a 'Bearer <token>' in.",
        ),
    ),
    ("realm", f.string(description="The realm of the WWW-Authenticate header sent with a 401.")),
    required=True,
    default={},
)


def _positive(value: Any) -> bool:
    return bool(value > 0)


def _contains_exp(value: Any) -> str | None:
    # Kong's then_match {contains = "exp"} lets a null claims_to_verify through.
    return None if value is None or "exp" in value else "expected to contain: exp"


ENTITY_CHECKS: Final = (
    conditional("config.maximum_expiration", _positive, "config.claims_to_verify", _contains_exp),
)
