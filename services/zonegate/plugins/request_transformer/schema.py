"""request-transformer's config (Kong's ``kong/plugins/request-transformer/schema.lua``), and the
template language its values are written in.

Entries are ``name:value`` (``remove`` takes bare names). Values may hold templates, ``$(...)``,
rendered against the incoming request: ``headers.x_api_key``, ``headers["X-Api-Key"]``,
``query_params.q``, ``uri_captures.user`` or ``uri_captures[1]``, ``shared.name``, string
literals, and ``or`` between them (``$(query_params.v or "1")``). Kong evaluates any Lua
expression there; only this subset is accepted, and anything else is refused when the config is
validated rather than sent upstream verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from zonegate.core import fields as f
from zonegate.core import typedefs as t

NAME: Final = "request-transformer"

SOURCES: Final = frozenset({"headers", "query_params", "uri_captures", "shared"})


# -- templates -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ref:
    """``source.key`` or ``source[key]``: one value of the incoming request."""

    source: str
    key: str | int


Term = Ref | str  # a reference, or a string literal
Expr = tuple[Term, ...]  # ``a or b or c``: the first that is not nil
Template = tuple[str | Expr, ...]  # literal text and expressions, in order


class TemplateError(ValueError):
    pass


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>\d+)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[.\[\]()])
    )""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), literal[1:-1], flags=re.DOTALL)


def _tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise TemplateError(f"unexpected '{text[position:].strip()[:20]}'")
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise TemplateError("unexpected end of expression")
        self.index += 1
        return token

    def expr(self) -> Expr:
        terms = list(self.term())
        while self.peek() == ("name", "or"):
            self.take()
            terms += self.term()
        return tuple(terms)

    def term(self) -> Expr:
        kind, value = self.take()
        if kind == "string":
            return (_unquote(value),)
        if (kind, value) == ("punct", "("):
            inner = self.expr()
            if self.take() != ("punct", ")"):
                raise TemplateError("expected ')'")
            return inner
        if kind == "name" and value in SOURCES:
            return (self.reference(value),)
        raise TemplateError(f"unsupported expression '{value}'")

    def reference(self, source: str) -> Ref:
        kind, value = self.take()
        if (kind, value) == ("punct", "."):
            kind, key = self.take()
            if kind != "name":
                raise TemplateError(f"expected a name after '{source}.'")
            return Ref(source, key)
        if (kind, value) == ("punct", "["):
            kind, key = self.take()
            if self.take() != ("punct", "]"):
                raise TemplateError("expected ']'")
            if kind == "string":
                return Ref(source, _unquote(key))
            if kind == "number":
                return Ref(source, int(key))
        raise TemplateError(f"expected '.name' or '[key]' after '{source}'")


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the ``)`` closing the ``(`` at ``start`` (Lua's ``%b()``), or None."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def parse_template(text: str) -> Template:
    """Split ``text`` into literal parts and ``$(...)`` expressions; raise ``TemplateError``."""
    parts: list[str | Expr] = []
    literal: list[str] = []
    position = 0
    while True:
        start = text.find("$(", position)
        end = _balanced_end(text, start + 1) if start != -1 else None
        if start == -1 or end is None:
            literal.append(text[position:])  # an unclosed "$(" stays text, as in Kong
            break
        literal.append(text[position:start])
        if literal != [""]:
            parts.append("".join(literal))
        literal = []
        parser = _Parser(text[start + 2 : end - 1])
        expression = parser.expr()
        if parser.peek() is not None:
            raise TemplateError(f"unexpected '{parser.peek()[1]}'")  # type: ignore[index]
        parts.append(expression)
        position = end
    rest = "".join(literal)
    if rest or not parts:
        parts.append(rest)
    return tuple(parts)


# -- validators (Kong's texts) --------------------------------------------------------------------

_PAIR = re.compile(r"^([^:]+):*(.*)$", re.DOTALL)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")


def split_pair(entry: str) -> tuple[str, str]:
    """``name:value`` as Kong splits it: at the first colon, further colons skipped."""
    match = _PAIR.match(entry)
    return (match.group(1), match.group(2)) if match else (entry, "")


def _template_error(value: str) -> str | None:
    try:
        parse_template(value)
    except TemplateError as exc:
        return f"value '{value}' is not in supported format, error:{exc}"
    return None


def _check_for_value(entry: str) -> str | None:
    name, value = split_pair(entry)
    if not value:
        return f"key '{name}' has no value"
    return _template_error(value)


def _header_name_only(entry: str) -> str | None:
    name, _ = split_pair(entry)
    return None if _HEADER_NAME.match(name) else f"'{name}' is not a valid header"


def _header_rename(entry: str) -> str | None:
    name, value = split_pair(entry)
    if not _HEADER_NAME.match(name):
        return f"'{name}' is not a valid header"
    if not _HEADER_NAME.match(value):
        return f"'{value}' is not a valid header"
    return None


def _header_value(entry: str) -> str | None:
    name, value = split_pair(entry)
    if not _HEADER_NAME.match(name):
        return f"'{name}' is not a valid header"
    if not value or not _HEADER_VALUE.match(value):
        return f"'{value}' is not a valid header"
    return _template_error(value)


_COLON = f.matches(r"^[^:]+:.*$")


def _list(element: f.Field, description: str) -> f.Field:
    return f.array(element, required=True, default=[], description=description)


def _record(*fields: tuple[str, f.Field], description: str) -> f.Field:
    return f.record(*fields, required=True, default={}, description=description)


CONFIG: Final = f.record(
    ("http_method", t.http_method(description="The method to send upstream instead of the client's.")),
    (
        "remove",
        _record(
            ("body", _list(f.string(), "Body parameters to remove.")),
            ("headers", _list(f.string(_header_name_only), "Headers to remove.")),
            ("querystring", _list(f.string(), "Query arguments to remove.")),
            description="Remove these, if present.",
        ),
    ),
    (
        "rename",
        _record(
            ("body", _list(f.string(_check_for_value), "old:new body parameter names.")),
            ("headers", _list(f.string(_COLON, _header_rename), "old:new header names.")),
            ("querystring", _list(f.string(_check_for_value), "old:new query argument names.")),
            description="Rename these, keeping their values.",
        ),
    ),
    (
        "replace",
        _record(
            ("body", _list(f.string(_check_for_value), "name:value body parameters.")),
            ("headers", _list(f.string(_COLON, _header_value), "name:value headers.")),
            ("querystring", _list(f.string(_check_for_value), "name:value query arguments.")),
            ("uri", f.string(_template_error, description="The path to send upstream instead.")),
            description="Replace the values of these, if present.",
        ),
    ),
    (
        "add",
        _record(
            ("body", _list(f.string(_check_for_value), "name:value body parameters.")),
            ("headers", _list(f.string(_COLON, _header_value), "name:value headers.")),
            ("querystring", _list(f.string(_check_for_value), "name:value query arguments.")),
            description="Add these, if not present.",
        ),
    ),
    (
        "append",
        _record(
            ("body", _list(f.string(_check_for_value), "name:value body parameters.")),
            ("headers", _list(f.string(_COLON, _header_value), "name:value headers.")),
            ("querystring", _list(f.string(_check_for_value), "name:value query arguments.")),
            description="Add these, next to any value already there.",
        ),
    ),
    required=True,
    default={},
)
