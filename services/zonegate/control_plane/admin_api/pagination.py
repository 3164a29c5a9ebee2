"""Kong's list pages: ``size``, ``offset`` and ``tags`` in, ``{"data", "next", "offset"}`` out.

``size`` defaults to 100 and must be an integer from 1 to 1000 (``kong/db/dao/init.lua``);
``offset`` is the opaque token of the previous page's answer (the store refuses one it did not
hand out, code 7); ``tags=a,b`` lists entities with every tag, ``tags=a/b`` with any of them, at
most five (``kong/api/endpoints.lua`` ``extract_options``). ``offset`` is in the answer only when
there is a next page, as in Kong, where a Lua nil drops the key and ``next`` stays ``null``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from zonegate.control_plane.admin_api.arguments import first, to_number
from zonegate.control_plane.admin_api.errors import invalid_options, invalid_size

DEFAULT_SIZE: Final = 100
MAX_SIZE: Final = 1000
MAX_TAGS: Final = 5

# Printable ASCII but ',' and '/', and any non-ASCII character (Kong's bytes 0x80-0xF4).
_TAG_CHARS: Final = r"[\x20-\x2B\x2D\x2E\x30-\x7E\u0080-\U0010FFFF]"
_TAGS_AND_RE: Final = re.compile(rf"^(?:{_TAG_CHARS}+(?:,|$))+$")
_TAGS_OR_RE: Final = re.compile(rf"^(?:{_TAG_CHARS}+(?:/|$))+$")


@dataclass(frozen=True, slots=True)
class PageQuery:
    size: int
    offset: str | None
    tags_all: tuple[str, ...] | None = None
    tags_any: tuple[str, ...] | None = None
    # As the client wrote them, for the ``next`` link.
    raw_size: str | None = None
    raw_tags: str | None = None


def _size(raw: Any) -> int:
    if raw is None:
        return DEFAULT_SIZE
    number = to_number(raw) if isinstance(raw, str) else None
    if number is None:
        raise invalid_size("size must be a number")
    if not math.isfinite(number) or number != int(number) or not 1 <= number <= MAX_SIZE:
        raise invalid_size(f"size must be an integer between 1 and {MAX_SIZE}")
    return int(number)


def _tags(raw: str) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    if _TAGS_AND_RE.match(raw):
        tags, any_of = tuple(t for t in raw.split(",") if t), False
    elif _TAGS_OR_RE.match(raw):
        tags, any_of = tuple(t for t in raw.split("/") if t), True
    else:
        raise invalid_options({"tags": "invalid filter syntax"})
    if len(tags) > MAX_TAGS:
        raise invalid_options({"tags": f"cannot query more than {MAX_TAGS} tags"})
    return (None, tags) if any_of else (tags, None)


def parse_page_query(query: Mapping[str, Any], *, tags: bool = True) -> PageQuery:
    """Read ``size``, ``offset`` and (for kinds with tags) ``tags`` from decoded query arguments."""
    raw_size = first(query.get("size"))
    size = _size(raw_size)
    offset = first(query.get("offset"))
    if offset is not None and not isinstance(offset, str):
        offset = None
    raw_tags = first(query.get("tags")) if tags else None
    tags_all = tags_any = None
    if raw_tags is not None:
        tags_all, tags_any = _tags(str(raw_tags))
    return PageQuery(
        size,
        offset or None,
        tags_all,
        tags_any,
        raw_size if isinstance(raw_size, str) else None,
        str(raw_tags) if raw_tags is not None else None,
    )


def next_link(path: str, offset: str | None, page: PageQuery | None = None) -> str | None:
    """Kong's ``next``: the same listing at the next offset (top-level lists keep tags and size)."""
    if offset is None:
        return None
    link = f"{path}?offset={quote(offset, safe='')}"
    if page is not None:
        if page.raw_tags is not None:
            link += f"&tags={quote(page.raw_tags, safe='')}"
        if page.raw_size is not None:
            link += f"&size={quote(page.raw_size, safe='')}"
    return link


def page_body(data: Sequence[Any], offset: str | None, next_page: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"data": list(data), "next": next_page}
    if offset is not None:
        body["offset"] = offset
    return body
