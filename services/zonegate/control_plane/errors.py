"""What the store raises, carrying everything Kong's Admin API error bodies need.

Kong's DAO reports database failures as an error table: ``code``, ``name``, ``message`` and,
for most codes, ``fields`` (``kong/db/errors.lua``). The message embeds the offending key the way
Lua's pretty-printer writes a table (``{name="x"}``, keys sorted, ``null`` for absent foreign keys),
and clients and scripts match on it, so ``lua_table`` reproduces that rendering exactly.

The HTTP status is the Admin API's business (one mapping, in one place); Kong answers 400 for
codes 3, 4, 7 and 19, 404 for 6, 405 for 12, 409 for 5 and 500 for 8.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from zonegate.core.errors import FOREIGN_KEY_VIOLATION, UNIQUE_VIOLATION

PRIMARY_KEY_VIOLATION: Final = 3
NOT_FOUND: Final = 6
INVALID_OFFSET: Final = 7
DATABASE_ERROR: Final = 8
OPERATION_UNSUPPORTED: Final = 12
REFERENCED_BY_OTHERS: Final = 19

_LUA_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def lua_table(value: Any) -> str:
    """Render a value as Kong's error messages do (penlight's ``pretty.write(t, "")``)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, Mapping):
        parts = []
        for key in sorted(value, key=str):
            name = str(key)
            rendered_key = name if _LUA_IDENTIFIER.match(name) else f"[{_lua_string(name)}]"
            parts.append(f"{rendered_key}={lua_table(value[key])}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list | tuple):
        return "{" + ",".join(lua_table(v) for v in value) + "}"
    return _lua_string(str(value))


class StoreError(Exception):
    """Base of the store's errors. ``body()`` is Kong's error table for the Admin API."""

    code: int = DATABASE_ERROR
    name: str = "database error"

    def __init__(self, message: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "name": self.name, "message": self.message}
        if self.fields is not None:
            body["fields"] = self.fields
        return body


class NotFound(StoreError):
    """No entity with that primary key (or endpoint key)."""

    code = NOT_FOUND
    name = "not found"

    def __init__(self, kind: str, key: Mapping[str, Any]) -> None:
        self.kind = kind
        self.key = dict(key)
        if list(self.key) == ["id"]:
            message = f"could not find the entity with primary key '{lua_table(self.key)}'"
        else:
            message = f"could not find the entity with '{lua_table(self.key)}'"
        super().__init__(message, dict(self.key))


class PrimaryKeyViolation(StoreError):
    """An insert reused an existing id."""

    code = PRIMARY_KEY_VIOLATION
    name = "primary key violation"

    def __init__(self, kind: str, entity_id: str) -> None:
        self.kind = kind
        super().__init__(f"primary key violation on key '{lua_table({'id': entity_id})}'", {"id": entity_id})


class UniqueViolation(StoreError):
    """A unique field, or a cache key (plugins, targets, acls), is already taken.

    ``fields`` maps each field of the key to the value that collided, foreign keys as
    ``{"id": ...}`` and absent ones as ``None``, exactly as Kong's 409 body carries them.
    """

    code = UNIQUE_VIOLATION
    name = "unique constraint violation"

    def __init__(self, kind: str, fields: Mapping[str, Any]) -> None:
        self.kind = kind
        super().__init__(f"UNIQUE violation detected on '{lua_table(dict(fields))}'", dict(fields))


class ForeignKeyViolation(StoreError):
    """A foreign key points nowhere (write), or a delete would orphan a restricting child.

    Build with ``invalid_reference`` or ``restricted``; ``referenced_by`` tells them apart.
    """

    code = FOREIGN_KEY_VIOLATION
    name = "foreign key violation"

    def __init__(
        self,
        kind: str,
        message: str,
        fields: dict[str, Any],
        *,
        field: str | None = None,
        reference: str | None = None,
        key: Mapping[str, Any] | None = None,
        referenced_by: str | None = None,
    ) -> None:
        self.kind = kind
        self.field = field
        self.reference = reference
        self.key = dict(key) if key is not None else None
        self.referenced_by = referenced_by
        super().__init__(message, fields)

    @classmethod
    def invalid_reference(
        cls, kind: str, field: str, reference: str, key: Mapping[str, Any]
    ) -> ForeignKeyViolation:
        """``kind.field`` names a ``reference`` entity that does not exist."""
        message = (
            f"the foreign key '{lua_table(dict(key))}' does not reference an existing '{reference}' entity."
        )
        return cls(kind, message, {field: dict(key)}, field=field, reference=reference, key=key)

    @classmethod
    def restricted(cls, kind: str, child: str) -> ForeignKeyViolation:
        """Deleting a ``kind`` entity is refused because a ``child`` entity still points at it."""
        message = f"an existing '{child}' entity references this '{kind}' entity"
        return cls(kind, message, {"@referenced_by": child}, referenced_by=child)


class ReferencedByOthers(StoreError):
    """A CA certificate is still listed by a service's ``ca_certificates`` (Kong's code 19)."""

    code = REFERENCED_BY_OTHERS
    name = "referenced by others"

    def __init__(self, kind: str, entity_id: str, by_kind: str, by_id: str) -> None:
        self.kind = kind
        self.by_kind = by_kind
        self.by_id = by_id
        super().__init__(f"ca certificate {entity_id} is still referenced by {by_kind} (id = {by_id})")


class InvalidOffset(StoreError):
    """A pagination offset that this store did not hand out."""

    code = INVALID_OFFSET
    name = "invalid offset"

    def __init__(self, offset: str, reason: str) -> None:
        self.offset = offset
        super().__init__(f"'{offset}' is not a valid offset: {reason}")


class OperationUnsupported(StoreError):
    """A write to a store that has none: the Admin API of a node without a database.

    Kong's ``off`` strategy words it ``cannot <operation> '<kind>' entities [by '<field>'] when not
    using a database`` (``kong/db/strategies/off/init.lua``); ``by`` is the field the URL named the
    entity by (``PUT /services/billing``), None for an id or a collection.
    """

    code = OPERATION_UNSUPPORTED
    name = "operation unsupported"

    def __init__(self, kind: str, operation: str, by: str | None = None) -> None:
        self.kind = kind
        self.operation = operation
        self.by = by
        by_field = f" by '{by}'" if by is not None else ""
        super().__init__(f"cannot {operation} '{kind}' entities{by_field} when not using a database")

    def by_field(self, field: str) -> OperationUnsupported:
        return OperationUnsupported(self.kind, self.operation, field)


class StoreUnavailable(StoreError):
    """PostgreSQL cannot be reached or did not answer in time (Kong's "database error")."""


class DatabaseError(StoreError):
    """PostgreSQL refused a statement for a reason the store does not expect (a bug, or a broken schema)."""


class SchemaNotReady(StoreError):
    """The database is not bootstrapped or lacks migrations this code needs; the message says what to run."""
