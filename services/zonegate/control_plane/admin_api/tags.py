"""Kong's ``/tags`` and ``/tags/{tag}``: every tag on every entity, one row per (tag, entity).

Rows are ``{"entity_name", "entity_id", "tag"}`` in tag order, paginated like any list
(``kong/api/routes/tags.lua``, ``kong/db/dao/tags.lua``); a malformed tag in the URL is Kong's
``invalid unique tag`` error (code 10).
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from zonegate.control_plane.admin_api.arguments import query_arguments
from zonegate.control_plane.admin_api.context import context
from zonegate.control_plane.admin_api.errors import invalid_unique, json_response
from zonegate.control_plane.admin_api.pagination import next_link, page_body, parse_page_query
from zonegate.control_plane.admin_api.routing import Routes
from zonegate.control_plane.store import TagRow
from zonegate.core import typedefs


def _row(row: TagRow) -> dict[str, str]:
    return {"entity_name": row.entity_name, "entity_id": row.entity_id, "tag": row.tag}


async def all_tags(request: web.Request) -> web.Response:
    ctx = context(request)
    page = parse_page_query(query_arguments(request), tags=False)
    rows, offset = await ctx.store.tags(page.size, page.offset)
    return json_response(page_body([_row(r) for r in rows], offset, next_link("/tags", offset)))


async def one_tag(request: web.Request) -> web.Response:
    ctx = context(request)
    tag = request.match_info["tags"]
    _, error = typedefs.tag.validate(tag)
    if error is not None:
        raise invalid_unique("tag", str(error))
    page = parse_page_query(query_arguments(request), tags=False)
    rows, offset = await ctx.store.tags(page.size, page.offset, tag=tag)
    link = next_link(f"/tags/{quote(tag, safe='')}", offset)
    return json_response(page_body([_row(r) for r in rows], offset, link))


def register(routes: Routes) -> None:
    routes.add("/tags", {"GET": all_tags})
    routes.add("/tags/{tags}", {"GET": one_tag})
