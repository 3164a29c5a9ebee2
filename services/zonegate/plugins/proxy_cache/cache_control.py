"""The HTTP caching rules proxy-cache applies: Cache-Control directives, a response's freshness
lifetime and media-type matching. Pure: no I/O, no clock (callers pass ``now``).

Directives are parsed as Kong's ``parse_directive_header`` reads them (names lower-cased, the
last of a repeated directive wins), with two repairs: a comma inside a quoted argument
(``private="Set-Cookie, X-Id"``) does not split it, and quotes are removed from arguments.
A directive's argument is kept as text; ``delta_seconds`` reads the numeric ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Final

Directives = Mapping[str, str | None]  # name -> argument (None for a bare directive)
MediaType = tuple[str, str, frozenset[tuple[str, str]]]  # type, subtype, parameters

EMPTY: Final[Directives] = {}
_ITEM: Final = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*"?)+')
_ESCAPE: Final = re.compile(r"\\(.)")
_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE: Final = re.compile(rf"\s*({_TOKEN})/({_TOKEN})\s*((?:;.*)?)", re.DOTALL)
_PARAMETER: Final = re.compile(rf';\s*({_TOKEN})\s*=\s*({_TOKEN}|"(?:[^"\\]|\\.)*")\s*')
# What lets a shared cache store the response to a request that carried Authorization
# (RFC 9111 section 3.5).
_SHAREABLE: Final = ("public", "s-maxage", "must-revalidate")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return _ESCAPE.sub(r"\1", text[1:-1])
    return text


def parse_directives(values: Iterable[str]) -> dict[str, str | None]:
    """Every Cache-Control header value of a message, read as one list of directives."""
    found: dict[str, str | None] = {}
    for value in values:
        for item in _ITEM.findall(value):
            name, equals, argument = item.partition("=")
            name = name.strip().lower()
            if name:
                found[name] = _unquote(argument.strip()) if equals else None
    return found


def delta_seconds(directives: Directives, name: str) -> int | None:
    """A directive's delta-seconds argument; None when absent or not a number."""
    argument = directives.get(name)
    if argument is None or not argument.isdigit():
        return None
    return int(argument)


def resource_ttl(directives: Directives, expires: list[str], now: float) -> float:
    """Seconds a response stays fresh (Kong's ``calculate_resource_ttl``): ``s-maxage``, else
    ``max-age``, else the last ``Expires`` less ``now``; 0 when none says so. A malformed
    ``max-age`` or ``Expires`` means stale (RFC 9111 sections 4.2.1 and 5.3)."""
    for name in ("s-maxage", "max-age"):
        if name in directives:
            seconds = delta_seconds(directives, name)
            return float(seconds) if seconds is not None else 0.0
    if expires:
        try:
            when = parsedate_to_datetime(expires[-1])
        except (TypeError, ValueError, IndexError):
            return 0.0
        if when.tzinfo is None:
            return 0.0  # an HTTP date is always GMT; one without a zone is not an HTTP date
        return max(when.timestamp() - now, 0.0)
    return 0.0


def shareable(directives: Directives) -> bool:
    """The response says a shared cache may reuse it for others although the request was
    authorized (RFC 9111 section 3.5)."""
    return any(name in directives for name in _SHAREABLE)


def parse_media_type(text: str) -> MediaType | None:
    """``type/subtype; name=value`` with type, subtype and parameter names lower-cased (as Kong's
    ``parse_mime_type``); a lone ``*`` is ``*/*``. None when it is not a media type."""
    if text.strip() == "*":
        return ("*", "*", frozenset())
    match = _MEDIA_TYPE.fullmatch(text)
    if match is None:
        return None
    rest = match.group(3).rstrip()
    parameters: set[tuple[str, str]] = set()
    position = 0
    while position < len(rest):
        if rest[position:].strip() == ";":
            break  # a trailing semicolon
        parameter = _PARAMETER.match(rest, position)
        if parameter is None:
            return None
        parameters.add((parameter.group(1).lower(), _unquote(parameter.group(2))))
        position = parameter.end()
    return (match.group(1).lower(), match.group(2).lower(), frozenset(parameters))


class ContentTypes:
    """The ``content_type`` setting, compiled: a response's media type matches an entry when the
    type, the subtype and the parameters are the same; ``type/*`` matches any subtype and ``*/*``
    anything, still with the same parameters (Kong 3.x)."""

    __slots__ = ("_any", "_exact", "_type_wild")

    def __init__(self, patterns: Iterable[str]) -> None:
        self._exact: set[MediaType] = set()
        self._type_wild: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        self._any: set[frozenset[tuple[str, str]]] = set()
        for pattern in patterns:
            parsed = parse_media_type(pattern)
            if parsed is None:
                continue  # never matches, as in Kong
            kind, subtype, parameters = parsed
            if kind == "*" and subtype == "*":
                self._any.add(parameters)
            elif subtype == "*":
                self._type_wild.add((kind, parameters))
            else:
                self._exact.add(parsed)

    def match(self, content_type: str) -> bool:
        parsed = parse_media_type(content_type)
        if parsed is None:
            return False
        kind, _, parameters = parsed
        return parsed in self._exact or (kind, parameters) in self._type_wild or parameters in self._any
