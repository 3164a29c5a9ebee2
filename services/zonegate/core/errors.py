"""Validation errors in Kong's shapes.

Kong reports schema problems as a nested ``fields`` table (field name -> message, list of
per-element messages, or nested table) plus an ``@entity`` list for cross-field rules, and
summarises them in one ``message``. Admin API clients and tooling parse both, so the shape and
the wording are kept exactly: ``schema violation (name: msg)`` for one error and
``N schema violations (a; b.c: d)`` for several, entity-level errors first, then fields sorted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

SCHEMA_VIOLATION: Final = 2
FOREIGN_KEY_VIOLATION: Final = 4
UNIQUE_VIOLATION: Final = 5
DECLARATIVE_CONFIG: Final = 14

ENTITY_KEY: Final = "@entity"

# A field error is a message, a list of element errors (None where the element is fine),
# or a mapping of sub-field errors.
FieldErrors = dict[str, Any]


def _summary_parts(fields: Mapping[str, Any]) -> list[str]:
    parts: list[str] = [str(m) for m in fields.get(ENTITY_KEY, [])]
    for name in sorted(k for k in fields if k != ENTITY_KEY):
        value = fields[name]
        if isinstance(value, Mapping):
            for sub in sorted(value, key=str):
                sub_value = value[sub]
                if not isinstance(sub_value, str):
                    sub_value = json.dumps(sub_value, sort_keys=True)
                parts.append(f"{name}.{sub}: {sub_value}")
        elif isinstance(value, list):
            for index, element in enumerate(value):
                if element is None:
                    continue
                text = element if isinstance(element, str) else json.dumps(element, sort_keys=True)
                # Kong numbers elements from 1, as Lua does.
                parts.append(f"{name}.{index + 1}: {text}")
        else:
            parts.append(f"{name}: {value}")
    return parts


def schema_violation_message(fields: Mapping[str, Any]) -> str:
    parts = _summary_parts(fields)
    if len(parts) == 1:
        return f"schema violation ({parts[0]})"
    return f"{len(parts)} schema violations ({'; '.join(parts)})"


class ZonegateError(Exception):
    """Base of every error the core raises on bad input."""


class SchemaViolation(ZonegateError):
    """One entity failed its schema; ``fields`` is Kong's nested error table."""

    def __init__(self, fields: FieldErrors) -> None:
        self.fields = fields
        super().__init__(schema_violation_message(fields))

    def body(self) -> dict[str, Any]:
        return {
            "code": SCHEMA_VIOLATION,
            "name": "schema violation",
            "message": str(self),
            "fields": self.fields,
        }


def iter_leaf_errors(errors: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Flatten a nested error table into (dotted path, message) pairs, in a stable order."""
    if isinstance(errors, str):
        yield path, errors
    elif isinstance(errors, Mapping):
        keys = sorted(errors, key=lambda k: (k != ENTITY_KEY, str(k)))
        for key in keys:
            if key == ENTITY_KEY:
                for message in errors[key]:
                    yield path, str(message)
            else:
                yield from iter_leaf_errors(errors[key], f"{path}.{key}" if path else str(key))
    elif isinstance(errors, list):
        for index, element in enumerate(errors):
            if element is not None:
                yield from iter_leaf_errors(element, f"{path}[{index}]")


class DeclarativeConfigError(ZonegateError):
    """A declarative file failed: ``fields`` mirrors the file's own nesting (Kong's code 14 shape).

    ``located`` lists every error with the path of the offending value in the file, e.g.
    ``services[0].routes[1].paths[0]: should start with: / (fixed path) or ~/ (regex path)``.
    """

    def __init__(self, fields: FieldErrors) -> None:
        self.fields = fields
        self.located: list[tuple[str, str]] = list(iter_leaf_errors(fields))
        super().__init__(
            "declarative config is invalid: " + json.dumps(fields, sort_keys=True, separators=(",", ":"))
        )

    def body(self) -> dict[str, Any]:
        return {
            "code": DECLARATIVE_CONFIG,
            "name": "invalid declarative configuration",
            "message": str(self),
            "fields": self.fields,
            "flattened_errors": [{"path": path, "message": message} for path, message in self.located],
        }

    def lines(self) -> list[str]:
        return [f"{path}: {message}" if path else message for path, message in self.located]
