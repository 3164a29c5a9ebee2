"""Kong's route regexes are PCRE; Python's ``re`` spells a few constructs differently.

Route authors copy Kong examples such as ``~/users/(?<id>\\d+)$``; this module rewrites the
PCRE-only spellings of named groups and back-references into Python's so the same text works,
and reports an invalid pattern in Kong's wording.
"""

from __future__ import annotations

import re
from typing import Final

_NAMED_GROUP_RE: Final = re.compile(r"\(\?(?:<([A-Za-z_][A-Za-z0-9_]*)>|'([A-Za-z_][A-Za-z0-9_]*)')")
_BACKREF_RE: Final = re.compile(r"\\k(?:<([A-Za-z_]\w*)>|\{([A-Za-z_]\w*)\}|'([A-Za-z_]\w*)')")


def to_python(pattern: str) -> str:
    """Rewrite ``(?<name>``, ``(?'name'`` and ``\\k<name>`` into Python's syntax."""

    def group(match: re.Match[str]) -> str:
        return f"(?P<{match.group(1) or match.group(2)}>"

    def backref(match: re.Match[str]) -> str:
        return f"(?P={match.group(1) or match.group(2) or match.group(3)})"

    return _BACKREF_RE.sub(backref, _NAMED_GROUP_RE.sub(group, pattern))


def compile_pcre(pattern: str) -> re.Pattern[str]:
    """Compile, raising ``re.error`` for a pattern Python cannot take."""
    return re.compile(to_python(pattern))


def regex_error(pattern: str) -> str | None:
    try:
        compile_pcre(pattern)
    except re.error as exc:
        return f"invalid regex: '{pattern}' (PCRE returned: {exc})"
    return None
