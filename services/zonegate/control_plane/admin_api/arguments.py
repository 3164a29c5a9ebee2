"""Request bodies and query strings, decoded the way Kong's Admin API decodes them.

Kong accepts JSON, ``application/x-www-form-urlencoded`` and ``multipart/form-data`` bodies on
POST, PUT and PATCH, refuses any other body with 415, and answers malformed JSON with 400
``Cannot parse JSON body`` (``kong/api/api_helpers.lua``). JSON is taken as it is. Form values
are strings, so Kong decodes their names and infers their types from the entity schema
(``kong/api/arguments.lua``, ``arguments_decoder.lua``), and so do we:

* ``a.b=x`` nests (``{"a": {"b": "x"}}``); ``a[]=x`` appends to an array, ``a[2]=x`` places at a
  1-based index, ``a[k]=x`` is a map key (POST, PUT and PATCH only); a name repeated
  (``paths=/a&paths=/b``) becomes an array.
* With the schema: ``""`` is null; integer and number fields take numbers (``"80"`` -> 80, a
  non-number is left for validation to refuse); booleans take ``"true"`` and ``"false"``; an array
  or set field given one value gets a one-element array; foreign keys, maps and records recurse.
* A free-form record (a plugin's ``config`` until plugin schemas exist) has no field kinds to go
  by: there ``"true"``/``"false"`` become booleans, numerals numbers and ``""`` null.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from zonegate.control_plane.admin_api.errors import message, schema_violation
from zonegate.control_plane.storable import find_unstorable, nested_error
from zonegate.core.entities import BY_NAME
from zonegate.core.errors import ENTITY_KEY
from zonegate.core.fields import Field
from zonegate.core.schema import EntitySchema

NEEDS_BODY: Final = frozenset({"POST", "PUT", "PATCH"})
JSON: Final = "application/json"
FORM: Final = "application/x-www-form-urlencoded"
MULTIPART: Final = "multipart/form-data"
UNSUPPORTED_MEDIA_TYPE: Final = "Unsupported Media Type"
CANNOT_PARSE_JSON: Final = "Cannot parse JSON body"
# Deeper bodies are refused before anything walks them: decoding, validation and storage recurse
# at least once per level, and Python's stack would give out (a 500) long before any real entity
# or declarative file gets near this. Kong's own JSON decoder stops at 1000.
MAX_DEPTH: Final = 100

Media = Literal["json", "form", "multipart", "text", "none"]


@dataclass(frozen=True, slots=True)
class Body:
    """A request body: its kind, the raw bytes, and the decoded arguments (names not yet typed)."""

    media: Media
    raw: bytes
    # JSON: the parsed document; form and multipart: the decoded (still string-valued) arguments.
    value: Any


def _media_type(request: web.Request) -> str | None:
    header = request.headers.get("Content-Type")
    if header is None:
        return None
    return header.split(";", 1)[0].strip().lower()


async def read_body(request: web.Request, *, text_types: Iterable[str] = ()) -> Body:
    """Read and decode the body of a POST, PUT or PATCH (anything else has none).

    ``text_types`` are further media types accepted as raw text (``POST /config`` takes YAML).
    """
    if request.method not in NEEDS_BODY:
        return Body("none", b"", {})
    media = _media_type(request)
    if media == MULTIPART:
        # aiohttp's multipart reader consumes the stream itself: the raw body is not kept.
        args = decode_pairs(await _multipart_pairs(request), allow_maps=True)
        if too_deep(args):  # a JSON part
            raise message(400, f"Cannot parse multipart body: nested deeper than {MAX_DEPTH} levels")
        return Body("multipart", b"", args)
    raw = await request.read()
    if media is None:
        if raw:
            raise message(415, UNSUPPORTED_MEDIA_TYPE)
        return Body("none", raw, {})
    if media.startswith(JSON):
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, nesting past the stack
            raise message(400, CANNOT_PARSE_JSON) from None
        if too_deep(document):
            raise message(400, CANNOT_PARSE_JSON)
        return Body("json", raw, document)
    if media == FORM:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise message(400, "Cannot parse form body: not UTF-8") from None
        pairs = parse_qsl(text, keep_blank_values=True)
        return Body("form", raw, decode_pairs(pairs, allow_maps=True))
    if media in text_types:
        return Body("text", raw, raw.decode(errors="replace"))
    raise message(415, UNSUPPORTED_MEDIA_TYPE)


async def _multipart_pairs(request: web.Request) -> list[tuple[str, Any]]:
    """Each named part as a value: JSON parts parsed, files and fields as text (Kong's multipart_mt)."""
    pairs: list[tuple[str, Any]] = []
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            data = await part.read(decode=True)
            text = data.decode(errors="replace")
            value: Any = text
            if (part.headers.get("Content-Type") or "").lower().startswith(JSON):
                try:
                    value = json.loads(text)
                except ValueError:
                    value = text
            pairs.append((part.name, value))
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError):
        # Kong logs a malformed multipart body and goes on without arguments; so do we.
        return []
    return pairs


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels (walked without recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def json_object(body: Body) -> dict[str, Any]:
    """The body's arguments as an object; a JSON body that is not an object fails like Kong's schema."""
    if body.media == "json":
        if not isinstance(body.value, dict):
            raise schema_violation({ENTITY_KEY: ["expected a record"]})
        return body.value
    if isinstance(body.value, dict):
        return body.value
    return {}


# -- names: a.b[1][k][] ------------------------------------------------------------------------------


class _Append:
    __slots__ = ()


APPEND: Final = _Append()
Segment = str | int | _Append

_SEGMENT_RE: Final = re.compile(r"([^\[\]]+)((?:\[[^\]]*\])*)")
_BRACKET_RE: Final = re.compile(r"\[([^\]]*)\]")


def parse_name(name: str, *, allow_maps: bool) -> list[Segment]:
    """The path a form name addresses; a name that is not of the nested forms is one plain key.

    So is a name nested more than ``MAX_DEPTH`` levels, which no schema has.
    """
    too_nested = name.count("[") + name.count(".") > MAX_DEPTH
    if not name or name.startswith(".") or name.endswith(".") or too_nested:
        return [name]
    segments: list[str] = []
    current = ""
    index = 0
    while index < len(name):
        char = name[index]
        if char == "[":
            end = name.find("]", index)
            if end == -1:
                return [name]
            current += name[index : end + 1]
            index = end + 1
        elif char == ".":
            segments.append(current)
            current = ""
            index += 1
        else:
            current += char
            index += 1
    segments.append(current)
    path: list[Segment] = []
    for segment in segments:
        match = _SEGMENT_RE.fullmatch(segment)
        if match is None:
            return [name]
        path.append(match[1])
        for key in _BRACKET_RE.findall(match[2]):
            if key == "":
                path.append(APPEND)
            elif key.isascii() and key.isdigit():  # Lua's %d: "¹" is a digit to Python, not to int()
                path.append(int(key))
            elif allow_maps:
                path.append(key)
            else:
                return [name]
    return path


class _Array:
    """An array being assembled: values at explicit (1-based) indexes, then appended ones."""

    __slots__ = ("appended", "indexed")

    def __init__(self) -> None:
        self.indexed: dict[int, Any] = {}
        self.appended: list[Any] = []


class _Repeated(list[Any]):
    """A plain name given more than once: its values, in order."""


def _child_for(segment: Segment) -> Any:
    return _Array() if isinstance(segment, int | _Append) else {}


def _insert(container: Any, path: list[Segment], value: Any) -> None:
    for position, segment in enumerate(path):
        last = position == len(path) - 1
        following = None if last else path[position + 1]
        if isinstance(container, _Array):
            if isinstance(segment, _Append):
                if last:
                    container.appended.append(value)
                    return
                segment = 1  # Kong nests an inner ``[]`` under the first element
            if not isinstance(segment, int):
                return  # a map key on an array: not addressable, dropped as Kong drops it
            if last:
                container.indexed[segment] = value
                return
            child = container.indexed.get(segment)
            if not isinstance(child, dict | _Array):
                child = container.indexed[segment] = _child_for(following)  # type: ignore[arg-type]
            container = child
            continue
        assert isinstance(container, dict)
        key = str(segment)
        if last:
            existing = container.get(key)
            if key not in container:
                container[key] = value
            elif isinstance(existing, _Repeated):
                existing.append(value)
            else:
                container[key] = _Repeated([existing, value])
            return
        child = container.get(key)
        wanted_array = isinstance(following, int | _Append)
        if not (isinstance(child, _Array) if wanted_array else isinstance(child, dict)):
            child = container[key] = _child_for(following)  # type: ignore[arg-type]
        container = child


def _finish(value: Any) -> Any:
    if isinstance(value, _Array):
        ordered = [value.indexed[i] for i in sorted(value.indexed)]
        return [_finish(v) for v in [*ordered, *value.appended]]
    if isinstance(value, _Repeated):
        return [_finish(v) for v in value]
    if isinstance(value, dict):
        return {k: _finish(v) for k, v in value.items()}
    return value


def decode_pairs(pairs: Iterable[tuple[str, Any]], *, allow_maps: bool) -> dict[str, Any]:
    """Form or query pairs into nested arguments (values untyped)."""
    root: dict[str, Any] = {}
    for name, value in pairs:
        _insert(root, parse_name(name, allow_maps=allow_maps), value)
    finished: dict[str, Any] = _finish(root)
    return finished


# -- types from the schema ------------------------------------------------------------------------

_NUMBER_RE: Final = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_INTEGER_RE: Final = re.compile(r"^[+-]?\d+$")


def to_number(text: str) -> int | float | None:
    """Kong's ``tonumber`` for decimal text; None when it is not a number (``nan`` is not one)."""
    stripped = text.strip()
    if _INTEGER_RE.match(stripped):
        return int(stripped)
    if _NUMBER_RE.match(stripped):
        return float(stripped)
    return None


def _guess(value: Any) -> Any:
    """Types for a free-form record, which has no field kinds to infer from."""
    if isinstance(value, str):
        if value == "":
            return None
        if value in ("true", "false"):
            return value == "true"
        number = to_number(value)
        return value if number is None else number
    if isinstance(value, list):
        return [_guess(v) for v in value]
    if isinstance(value, dict):
        return {k: _guess(v) for k, v in value.items()}
    return value


def infer_value(value: Any, field: Field | None) -> Any:
    if field is None:
        return value
    if isinstance(value, str) and value == "":
        return None
    kind = field.kind
    if isinstance(value, str):
        if kind in ("integer", "number"):
            number = to_number(value)
            return value if number is None else number
        if kind == "boolean":
            return {"true": True, "false": False}.get(value, value)
        if kind in ("array", "set"):
            return [infer_value(value, field.elements)]
        return value
    if kind in ("array", "set") and isinstance(value, list):
        return [infer_value(v, field.elements) for v in value]
    if kind == "foreign" and isinstance(value, dict):
        return infer_entity(value, BY_NAME[field.reference])
    if kind == "map" and isinstance(value, dict):
        return {k: infer_value(v, field.values) for k, v in value.items()}
    if kind == "record" and isinstance(value, dict):
        if not field.fields:
            return _guess(value)
        by_name = dict(field.fields)
        return {k: infer_value(v, by_name.get(k)) for k, v in value.items()}
    return value


def infer_entity(
    args: Mapping[str, Any], schema: EntitySchema, extra: Mapping[str, Field] | None = None
) -> dict[str, Any]:
    """Type form arguments by the schema's fields (and ``extra`` ones, e.g. a shorthand's)."""
    out: dict[str, Any] = {}
    for name, value in args.items():
        if schema.has_field(name):
            out[name] = infer_value(value, schema.field(name))
        elif extra is not None and name in extra:
            out[name] = infer_value(value, extra[name])
        else:
            out[name] = value
    return out


async def entity_arguments(
    request: web.Request, schema: EntitySchema, extra: Mapping[str, Field] | None = None
) -> dict[str, Any]:
    """The body of an entity write, typed: JSON as sent, form values inferred from the schema."""
    body = await read_body(request)
    args = json_object(body)
    typed = infer_entity(args, schema, extra) if body.media in ("form", "multipart") else dict(args)
    reject_unstorable(typed)
    return typed


def reject_unstorable(args: Mapping[str, Any]) -> None:
    """A NUL character or a non-finite number fails as a schema violation of its field."""
    found = find_unstorable(args)
    if found is None:
        return
    path, problem = found
    if not path:
        raise schema_violation({ENTITY_KEY: [problem]})
    raise schema_violation({str(path[0]): nested_error(path[1:], problem)})


def query_arguments(request: web.Request) -> dict[str, Any]:
    """The query string decoded like a form (no map keys: Kong keeps those for searches)."""
    return decode_pairs(request.query.items(), allow_maps=False)


def first(value: Any) -> Any:
    """Kong reads the first of a repeated query argument."""
    if isinstance(value, list):
        return value[0] if value else None
    return value
