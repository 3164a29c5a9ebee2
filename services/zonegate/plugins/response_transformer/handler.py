"""response-transformer's handler (Kong's ``handler.lua``, ``header_transformer.lua`` and
``body_transformer.lua``).

Headers change in the response phase, in Kong's order (remove, rename, replace, add, append);
``rename``, ``replace`` and ``add`` test the headers as the response came (before any of them).
When there are JSON operations and the response is ``application/json``, the whole body is held
and its top-level object edited in the same order; a body that is not a JSON object goes out
untouched, as does one larger than the proxy's buffer. The proxy sets the new Content-Length.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import structlog

from zonegate import __version__
from zonegate.plugins.api import Plugin, PluginContext, SharedIndexes
from zonegate.plugins.response_transformer.schema import split_pair

log = structlog.get_logger(__name__)

SECTIONS: Final = ("remove", "rename", "replace", "add", "append")
_LUA_NUMBER: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LUA_HEX: Final = re.compile(r"[+-]?0[xX][0-9a-fA-F]+")

Op = tuple[str, str | None, str | None]  # name, value (None when empty), json type


def is_json(content_type: str | None) -> bool:
    """Kong's check: one of the comma-separated media types is exactly application/json."""
    for media_type in (content_type or "").split(","):
        essence = media_type.split(";", 1)[0].strip().lower()
        if essence == "application/json":
            return True
    return False


def _lua_number(text: str) -> int | float | None:
    """Lua's ``tonumber`` on a string."""
    stripped = text.strip()
    if _LUA_HEX.fullmatch(stripped):
        return int(stripped, 16)
    if not _LUA_NUMBER.fullmatch(stripped):
        return None
    number = float(stripped)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def json_value(value: str | None, json_type: str | None) -> Any:
    """Kong's ``json_value``: the text as cjson would escape it inside a string (quotes and
    slashes left alone), then cast to the entry's type."""
    text = "null" if value is None else json.dumps(value, ensure_ascii=False)[1:-1].replace('\\"', '"')
    if json_type == "number":
        return _lua_number(text)
    if json_type == "boolean":
        return text == "true"
    return text


def append_value(current: Any, value: Any) -> Any:
    if isinstance(current, str):
        return [current, value]
    if isinstance(current, list):
        current.append(value)
        return current
    return [value]


def transform_json(ops: dict[str, tuple[Op, ...]], body: bytes) -> bytes | None:
    """The edited body, or None when it is not a JSON object."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for name, _, _ in ops["remove"]:
        data.pop(name, None)
    for old, new, _ in ops["rename"]:
        if old in data and new:
            data[new] = data[old]
            data.pop(old)  # after setting the new one: renaming to the same name removes it, as in Kong
    for name, value, json_type in ops["replace"]:
        cast = json_value(value, json_type)
        if name in data and data[name] is not False and cast is not None:
            data[name] = cast
    for name, value, json_type in ops["add"]:
        cast = json_value(value, json_type)
        if (name not in data or data[name] is False) and cast is not None:
            data[name] = cast
    for name, value, json_type in ops["append"]:
        cast = json_value(value, json_type)
        if cast is not None:
            data[name] = append_value(data.get(name), cast)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _ops(section: dict[str, Any] | None, kind: str) -> tuple[Op, ...]:
    section = section or {}
    types = (section.get("json_types") or []) if kind == "json" else []
    found: list[Op] = []
    for index, entry in enumerate(section.get(kind) or ()):
        name, value = split_pair(entry)
        found.append((name, value or None, types[index] if index < len(types) else None))
    return tuple(found)


class ResponseTransformer(Plugin):
    NAME = "response-transformer"
    PRIORITY = 800
    VERSION = __version__

    def configure(self, shared: SharedIndexes) -> None:
        self.headers = {s: _ops(self.config.get(s), "headers") for s in SECTIONS}
        self.json = {s: _ops(self.config.get(s), "json") for s in SECTIONS}
        self.edits_body = any(self.json.values())

    def response(self, ctx: PluginContext) -> None:
        ops = self.headers
        came: dict[str, list[str]] = {}
        for header, current in ctx.response_header_items():
            came.setdefault(header.lower(), []).append(current)
        for name, _, _ in ops["remove"]:
            ctx.clear_response_header(name)
        for old, new, _ in ops["rename"]:
            values = came.get(old.lower())
            if values and new:
                ctx.set_response_header(new, values[0])
                for extra in values[1:]:
                    ctx.add_response_header(new, extra)
                ctx.clear_response_header(old)
        for name, value, _ in ops["replace"]:
            if name.lower() in came and value:
                ctx.set_response_header(name, value)
        for name, value, _ in ops["add"]:
            if name.lower() not in came and value:
                ctx.set_response_header(name, value)
        for name, value, _ in ops["append"]:
            if value:
                ctx.add_response_header(name, value)
        if self.edits_body and is_json(ctx.response_header("Content-Type")):
            ctx.buffer_response_body()

    def body(self, ctx: PluginContext, body: bytes) -> bytes:
        if not self.edits_body or not is_json(ctx.response_header("Content-Type")):
            return body  # another plugin asked for the body
        edited = transform_json(self.json, body)
        if edited is None:
            log.warning("response_transformer.body_not_json", request_id=ctx.request.request_id)
            return body
        return edited
