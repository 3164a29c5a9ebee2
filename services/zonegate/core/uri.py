"""Request-path normalisation as Kong 3 does it (``kong/tools/uri.lua``, ``normalize(uri, true)``).

One definition for two uses that must agree: the schema refuses a prefix route path that is not
already normal, and the router matches normalised request paths against those prefixes.
Kong decodes every percent-escape except those of reserved characters (which it upper-cases),
removes dot segments and merges repeated slashes.

Paths here are *byte strings carried in str*: one character per byte (latin-1), as they arrive
off the wire. ``normalize_text`` wraps that for paths written as Unicode text (route config).
"""

from __future__ import annotations

import re
from typing import Final

_RESERVED: Final = frozenset(b"!*'();:@&=+$,/?%#[]")
_ESCAPE_RE: Final = re.compile(r"%([0-9A-Fa-f]{2})")


def _decode_escape(match: re.Match[str]) -> str:
    byte = int(match.group(1), 16)
    return "%" + match.group(1).upper() if byte in _RESERVED else chr(byte)


def _remove_dot_segments(path: str) -> str:
    """Kong's loop: segments keep their leading slash; ``..`` pops one; ``//`` collapses."""
    out: list[str] = []
    rest = path
    while rest:
        if rest in ("/.", "/.."):
            if rest == "/.." and out:
                out.pop()
            rest = "/"
        elif rest in (".", ".."):
            rest = ""
        elif rest.startswith("../"):
            rest = rest[3:]
        elif rest.startswith(("./", "/./")):
            rest = rest[2:]
        elif rest.startswith("/../"):
            rest = rest[3:]
            if out:
                out.pop()
        elif rest.startswith("//"):
            rest = rest[1:]
        else:
            cut = rest.find("/", 1)
            if cut == -1:
                out.append(rest)
                rest = ""
            else:
                out.append(rest[:cut])
                rest = rest[cut:]
    return "".join(out)


def normalize(path: str) -> str:
    """Normalise a wire path (latin-1 byte string)."""
    if "%" in path:
        path = _ESCAPE_RE.sub(_decode_escape, path)
    # Without "/." or "//" (or a leading ".") the segment loop would copy the path unchanged;
    # checking that first keeps the common request free of the loop.
    if "/." in path or "//" in path or path.startswith("."):
        return _remove_dot_segments(path)
    return path


def normalize_text(path: str) -> str:
    """Normalise a path written as Unicode text: through its UTF-8 bytes, and back."""
    wire = path.encode("utf-8").decode("latin-1")
    return normalize(wire).encode("latin-1").decode("utf-8", errors="replace")
