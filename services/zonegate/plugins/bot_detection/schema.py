"""bot-detection's config (Kong's ``kong/plugins/bot-detection/schema.lua``): ``allow`` and
``deny`` lists of regexes (PCRE in Kong; its named-group spellings are accepted here too)."""

from __future__ import annotations

import re
from typing import Final

from zonegate.core import fields as f
from zonegate.core import pcre

NAME: Final = "bot-detection"
NO_CONSUMER: Final = True


def _regex(value: str) -> str | None:
    try:
        pcre.compile_pcre(value)
    except re.error:
        return f"not a valid regex: {value}"  # Kong's is_regex wording
    return None


CONFIG: Final = f.record(
    (
        "allow",
        f.array(
            f.string(_regex),
            default=[],
            description="Regexes a User-Agent may match to be let through, before any other check.",
        ),
    ),
    (
        "deny",
        f.array(
            f.string(_regex),
            default=[],
            description="Regexes of User-Agents to refuse, on top of the built-in bot list.",
        ),
    ),
    required=True,
    default={},
)
