"""request-transformer's handler (Kong's ``kong/plugins/request-transformer/access.lua``).

Kong's order: the path (``replace.uri``), the method, headers, body, query string; within each,
remove, rename, replace, add, append. Templates render against the request as it came in.

The body is transformed when it is form-urlencoded or JSON and there are body operations (and
merged into the query when ``http_method`` turns a form POST into GET, HEAD or TRACE): the access
phase then waits for the whole body, up to the proxy's buffer limit. A larger body, and a
multipart one, goes upstream untouched.

Kong's quirks are kept where a client could see them: renaming an argument that is absent
removes the target name; ``replace`` and ``add`` test Lua truthiness (a JSON ``false`` counts
as absent); a query with any query operation is re-encoded with sorted names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import quote, unquote_plus

import structlog

from zonegate import __version__
from zonegate.plugins.api import AccessResult, Exit, Plugin, PluginContext, SharedIndexes
from zonegate.plugins.request_transformer.schema import Ref, Template, parse_template, split_pair

log = structlog.get_logger(__name__)

JSON: Final = "json"
FORM: Final = "form"
MULTIPART: Final = "multipart"
SECTIONS: Final = ("remove", "rename", "replace", "add", "append")
BODYLESS_METHODS: Final = frozenset({"GET", "HEAD", "TRACE"})

Arg = str | bool
Args = dict[str, Arg | list[Arg]]  # Kong's args table: a value, True for a bare name, or a list
Op = tuple[str, Template | None]  # name, and the value's template (None for bare names)
Render = Callable[[Template | None], str]


def content_kind(content_type: str | None) -> str | None:
    if not content_type:
        return None
    lowered = content_type.lower()
    if "application/json" in lowered:
        return JSON
    if "multipart/form-data" in lowered:
        return MULTIPART
    if "application/x-www-form-urlencoded" in lowered:
        return FORM
    return None


def decode_args(raw: str) -> Args:
    """A query string or form body as OpenResty decodes it: repeated names give lists, a bare
    name gives True."""
    args: Args = {}
    for part in raw.split("&"):
        name, sep, value = part.partition("=")
        name = unquote_plus(name)
        if not name:
            continue
        item: Arg = unquote_plus(value) if sep else True
        current = args.get(name)
        if current is None:
            args[name] = item
        elif isinstance(current, list):
            current.append(item)
        else:
            args[name] = [current, item]
    return args


def encode_args(args: Mapping[str, Arg | list[Arg]], *, sort: bool) -> str:
    """Kong's encoding: True gives a bare name, False nothing, strings percent-encoded."""
    parts: list[str] = []
    for name in sorted(args) if sort else args:
        value = args[name]
        for item in value if isinstance(value, list) else [value]:
            if item is True:
                parts.append(quote(name, safe=""))
            elif item is not False:
                parts.append(f"{quote(name, safe='')}={quote(item, safe='')}")
    return "&".join(parts)


def append_value(current: Any, value: str) -> Any:
    """Kong's ``append_value``: a string becomes a list of both, a list grows, anything else
    (absent, a number, a bare name) is replaced by a list of the new value."""
    if isinstance(current, str):
        return [current, value]
    if isinstance(current, list):
        current.append(value)
        return current
    return [value]


def _lua_string(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_lua_string(v) for v in value)
    return str(value)


class TemplateEnv:
    """What templates read: the request as it came in, looked up on first use."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.headers: dict[str, list[str]] = {}
        for name, value in ctx.request.headers:
            self.headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        self.query = decode_args(ctx.request.query_bytes.decode("latin-1"))

    def lookup(self, ref: Ref) -> str | None:
        key = ref.key
        if ref.source == "headers":
            name = str(key).lower()
            # As OpenResty's header table: any case, and "_" for "-".
            values = self.headers.get(name) or self.headers.get(name.replace("_", "-"))
            return ", ".join(values) if values else None
        if ref.source == "query_params":
            value = self.query.get(str(key))
            return None if value is None else _lua_string(value)
        if ref.source == "uri_captures":
            request = self.ctx.request
            if isinstance(key, int):
                groups = request.uri_groups
                return groups[key - 1] if 0 < key <= len(groups) else None
            return request.uri_captures.get(key)
        shared = self.ctx.shared.get(str(key))
        return None if shared is None else _lua_string(shared)

    def render(self, template: Template | None) -> str:
        if template is None:
            return ""
        out: list[str] = []
        for part in template:
            if isinstance(part, str):
                out.append(part)
                continue
            value: str | None = None
            for term in part:  # a or b or c: the first that is not nil
                value = term if isinstance(term, str) else self.lookup(term)
                if value is not None:
                    break
            out.append(value or "")
        return "".join(out)


def _static(template: Template | None) -> str:
    """A template without expressions: its text (no request needed)."""
    return "".join(part for part in template or () if isinstance(part, str))


def _ops(entries: list[str] | None) -> tuple[Op, ...]:
    found: list[Op] = []
    for entry in entries or ():
        name, value = split_pair(entry)
        found.append((name, parse_template(value) if value else None))
    return tuple(found)


def transform_params(
    ops: Mapping[str, tuple[Op, ...]],
    params: dict[str, Any],
    has_body: bool,
    render: Render,
    *,
    lua_false: bool,
) -> bool:
    """Body parameters in Kong's order; True when anything was applied. ``lua_false``: a JSON
    ``false`` is falsy to Kong's ``replace`` and ``add`` checks (form values never are)."""

    def truthy(name: str) -> bool:
        return name in params and not (lua_false and params[name] is False)

    changed = False
    if has_body:
        for name, _ in ops["remove"]:
            params.pop(name, None)
            changed = True
        for old, new_template in ops["rename"]:
            new = render(new_template)
            value = params.get(old)
            params.pop(new, None)
            if old in params:
                params[new] = value
            params.pop(old, None)
            changed = True
        for name, template in ops["replace"]:
            if truthy(name):
                params[name] = render(template)
                changed = True
    for name, template in ops["add"]:
        if not truthy(name):
            params[name] = render(template)
            changed = True
    for name, template in ops["append"]:
        params[name] = append_value(params.get(name), render(template))
        changed = True
    return changed


class RequestTransformer(Plugin):
    NAME = "request-transformer"
    PRIORITY = 801
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        config = self.config
        self.method: str | None = config.get("http_method")
        uri = (config.get("replace") or {}).get("uri")
        self.uri = parse_template(uri) if uri else None
        self.ops: dict[str, dict[str, tuple[Op, ...]]] = {
            kind: {section: _ops((config.get(section) or {}).get(kind)) for section in SECTIONS}
            for kind in ("headers", "querystring", "body")
        }
        self.body_ops = any(self.ops["body"].values())
        self.query_ops = any(self.ops["querystring"].values())
        templates = [t for ops in self.ops.values() for group in ops.values() for _, t in group]
        self.templated = any(not isinstance(part, str) for t in [*templates, self.uri] for part in t or ())

    def access(self, ctx: PluginContext) -> AccessResult:
        kind = content_kind(ctx.header("Content-Type"))
        needs_body = (self.body_ops and kind in (JSON, FORM)) or (
            self.method in BODYLESS_METHODS and kind == FORM
        )
        if needs_body and not ctx.body_ready:
            return self._after_body(ctx, kind)
        self._transform(ctx, kind)
        return None

    async def _after_body(self, ctx: PluginContext, kind: str | None) -> Exit | None:
        await ctx.wait_body()
        if ctx.body_ready:  # else the client went away meanwhile
            self._transform(ctx, kind)
        return None

    def _transform(self, ctx: PluginContext, kind: str | None) -> None:
        render: Render = TemplateEnv(ctx).render if self.templated else _static
        if self.uri is not None:
            path = render(self.uri)
            if path:
                ctx.set_path(path if path.startswith("/") else "/" + path)
        self._method(ctx, kind)
        self._headers(ctx, render)
        self._body(ctx, kind, render)
        self._querystring(ctx, render)

    def _method(self, ctx: PluginContext, kind: str | None) -> None:
        if self.method is None:
            return
        ctx.set_method(self.method)
        if self.method not in BODYLESS_METHODS or kind != FORM:
            return
        body = ctx.body()
        params = decode_args(body.decode("utf-8", "replace")) if body else {}
        if not params:
            return
        query = decode_args(ctx.request.query_bytes.decode("latin-1"))
        for name, value in params.items():
            values = value if isinstance(value, list) else [value]
            current = query.get(name)
            if current is None:
                query[name] = value
            elif isinstance(current, list):
                current.extend(values)
            else:
                query[name] = [current, *values]
        ctx.set_raw_query(encode_args(query, sort=True).encode("latin-1"))

    def _headers(self, ctx: PluginContext, render: Render) -> None:
        ops = self.ops["headers"]
        # Host is not among the headers Kong works on: only ``replace`` may set it.
        for name, _ in ops["remove"]:
            if name.lower() != "host":
                ctx.clear_header(name)
        for old, new_template in ops["rename"]:
            if old.lower() == "host":
                continue
            values = ctx.header_values(old)
            if not values:
                continue
            new = render(new_template)
            ctx.clear_header(new)
            for value in values:
                ctx.add_header(new, value)
            # After the new one is set: renaming to the same name removes it, as in Kong.
            ctx.clear_header(old)
        for name, template in ops["replace"]:
            if name.lower() == "host" or ctx.header(name) is not None:
                ctx.set_header(name, render(template))
        for name, template in ops["add"]:
            if name.lower() != "host" and ctx.header(name) is None:
                ctx.add_header(name, render(template))
        for name, template in ops["append"]:
            if name.lower() != "host":
                ctx.add_header(name, render(template))

    def _body(self, ctx: PluginContext, kind: str | None, render: Render) -> None:
        if not self.body_ops or kind not in (JSON, FORM):
            if self.body_ops and kind == MULTIPART:
                log.debug("request_transformer.multipart_untouched", request_id=ctx.request.request_id)
            return
        body = ctx.body()
        if body is None:
            log.warning(
                "request_transformer.body_too_large",
                request_id=ctx.request.request_id,
                reason="the body is larger than the proxy buffers: sent untouched",
            )
            return
        params: dict[str, Any]
        if kind == JSON:
            if body:
                try:
                    decoded = json.loads(body)
                except ValueError:
                    return  # Kong leaves a body it cannot parse alone
                if not isinstance(decoded, dict):
                    return
                params = decoded
            else:
                params = {}
            if transform_params(self.ops["body"], params, bool(body), render, lua_false=True):
                ctx.set_body(json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode())
            return
        params = dict(decode_args(body.decode("utf-8", "replace")))
        if transform_params(self.ops["body"], params, bool(body), render, lua_false=False):
            ctx.set_body(encode_args(params, sort=False).encode("latin-1"))

    def _querystring(self, ctx: PluginContext, render: Render) -> None:
        if not self.query_ops:
            return
        ops = self.ops["querystring"]
        query = decode_args(ctx.request.query_bytes.decode("latin-1"))
        for name, _ in ops["remove"]:
            query.pop(name, None)
        for old, new_template in ops["rename"]:
            new = render(new_template)
            value = query.pop(old, None)
            query.pop(new, None)
            if value is not None:
                query[new] = value
            if old == new:
                query.pop(new, None)  # Kong sets the new name, then clears the old: same name, gone
        for name, template in ops["replace"]:
            if name in query:
                query[name] = render(template)
        for name, template in ops["add"]:
            if name not in query:
                query[name] = render(template)
        for name, template in ops["append"]:
            query[name] = append_value(query.get(name), render(template))
        ctx.set_raw_query(encode_args(query, sort=True).encode("latin-1"))
