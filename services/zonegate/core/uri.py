"""URI path normalisation as Kong's router does it (``kong/tools/uri.lua``).

Kong refuses a prefix route path that is not already in normal form, and the router compares
normalised request paths, so both sides must agree on one definition: percent-encoded
unreserved characters decoded, other escapes upper-cased, dot segments removed, and (for
matching) repeated slashes merged.
"""

from __future__ import annotations

import re
from typing import Final

_ESCAPE_RE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _unescape_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
            continue
        if segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
            continue
        output.append(segment)
    result = "/".join(output)
    if path.startswith("/") and not result.startswith("/"):
        result = "/" + result
    return result


def normalize(path: str, *, merge_slashes: bool = False) -> str:
    path = _ESCAPE_RE.sub(_unescape_unreserved, path)
    path = remove_dot_segments(path)
    if merge_slashes:
        path = re.sub(r"/{2,}", "/", path)
    return path
