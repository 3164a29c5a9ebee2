"""Entity schemas: fields plus the cross-field checks written beside them.

One ``EntitySchema`` validates an entity whatever its source (Admin API body, declarative
file, snapshot) and produces Kong's error table. Validation order follows Kong: shorthands
expand first (``url`` on services), then every field, then entity checks, and an entity check
is skipped when one of the fields it reads already failed, so a user sees the root cause once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from zonegate.core.errors import ENTITY_KEY, SchemaViolation
from zonegate.core.fields import Field, validate_fields

Entity = dict[str, Any]

# A check reads the validated entity and returns errors: ``{"@entity": [..], "field": "msg"}``.
CheckFn = Callable[[Entity], dict[str, Any]]
# A shorthand rewrites the raw input (e.g. ``url`` into protocol/host/port/path); it returns
# the new input and field errors.
Shorthand = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class EntityCheck:
    reads: tuple[str, ...]
    fn: CheckFn
    # Kong skips a check when a field it reads failed, unless the check is one of those that
    # still run on the raw values (at_least_one_of, conditional, ...); those name the fields
    # that must be valid for them to make sense, and their errors replace the field's own.
    runs_with_invalid: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class EntitySchema:
    name: str  # the plural kind, e.g. "services"; also the declarative key
    fields: tuple[tuple[str, Field], ...]
    checks: tuple[EntityCheck, ...] = ()
    endpoint_key: str | None = None  # the unique name usable in URLs and foreign keys
    # Fields whose joint values must be unique (Kong's cache_key), e.g. acls (consumer, group).
    cache_key: tuple[str, ...] = ()
    shorthands: tuple[tuple[str, Shorthand], ...] = ()
    # Input rewrites that always run before validation (e.g. a default that depends on another field).
    prepare: tuple[Shorthand, ...] = ()
    # Rewrites of a valid entity into its stored form (e.g. a target gets its default port).
    normalizers: tuple[Callable[[Entity], None], ...] = ()
    description: str = ""
    _by_name: dict[str, Field] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update(self.fields)

    def field(self, name: str) -> Field:
        return self._by_name[name]

    def has_field(self, name: str) -> bool:
        return name in self._by_name

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)

    def foreign_keys(self) -> list[tuple[str, Field]]:
        return [(name, spec) for name, spec in self.fields if spec.kind == "foreign"]

    def unique_fields(self) -> list[str]:
        return [name for name, spec in self.fields if spec.unique]

    def validate(self, data: Mapping[str, Any]) -> Entity:
        """Return the entity with every field present and defaults filled, or raise SchemaViolation."""
        entity, errors = self.check(data)
        if errors:
            raise SchemaViolation(errors)
        return entity

    def check(self, data: Mapping[str, Any]) -> tuple[Entity, dict[str, Any]]:
        if not isinstance(data, Mapping):
            return {}, {ENTITY_KEY: ["expected a record"]}
        raw = dict(data)
        errors: dict[str, Any] = {}
        for shorthand_name, expand in self.shorthands:
            if shorthand_name in raw:
                raw, shorthand_errors = expand(raw)
                errors.update(shorthand_errors)
        for rewrite in self.prepare:
            raw, rewrite_errors = rewrite(raw)
            errors.update(rewrite_errors)
        if errors:
            # Kong reports shorthand errors alone: the fields they would have set are unknown.
            return {}, errors
        entity, field_errors = validate_fields(self.fields, raw)
        errors.update(field_errors)
        # What lenient checks see: valid values, and the raw input where a field failed.
        view = {**entity, **{name: raw.get(name) for name in field_errors}}
        entity_errors: list[str] = []
        for check in self.checks:
            if check.runs_with_invalid is not None:
                if any(name in field_errors for name in check.runs_with_invalid):
                    continue
                found = check.fn(view)
            elif any(name in errors for name in check.reads):
                continue
            else:
                found = check.fn(entity)
            for key, value in found.items():
                if key == ENTITY_KEY:
                    entity_errors.extend(value)
                else:
                    errors[key] = value
        if entity_errors:
            errors[ENTITY_KEY] = entity_errors
        if not errors:
            for normalize in self.normalizers:
                normalize(entity)
        return entity, errors


# -- reusable entity checks (Kong's entity checkers) ---------------------------------------


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def at_least_one_of(*names: str) -> EntityCheck:
    def fn(entity: Entity) -> dict[str, Any]:
        if any(not is_empty(entity.get(n)) for n in names):
            return {}
        return {ENTITY_KEY: [f"at least one of these fields must be non-empty: {_quoted(names)}"]}

    return EntityCheck(names, fn, runs_with_invalid=())


def only_one_of(*names: str) -> EntityCheck:
    def fn(entity: Entity) -> dict[str, Any]:
        if sum(not is_empty(entity.get(n)) for n in names) <= 1:
            return {}
        return {ENTITY_KEY: [f"only one of these fields must be non-empty: {_quoted(names)}"]}

    return EntityCheck(names, fn, runs_with_invalid=())


def all_or_none_of(*names: str) -> EntityCheck:
    def fn(entity: Entity) -> dict[str, Any]:
        present = [not is_empty(entity.get(n)) for n in names]
        if all(present) or not any(present):
            return {}
        return {ENTITY_KEY: [f"all or none of these fields must be set: {_quoted(names)}"]}

    return EntityCheck(names, fn)


def distinct(*names: str) -> EntityCheck:
    def fn(entity: Entity) -> dict[str, Any]:
        values = [entity.get(n) for n in names if entity.get(n) is not None]
        if len(values) == len(set(map(str, values))):
            return {}
        return {ENTITY_KEY: [f"values of these fields must be distinct: {_quoted(names)}"]}

    return EntityCheck(names, fn)


def conditional(
    if_field: str,
    if_match: Callable[[Any], bool],
    then_field: str,
    then_check: Callable[[Any], str | None],
) -> EntityCheck:
    """When ``if_field`` matches, ``then_field`` must pass ``then_check`` (Kong's ``conditional``)."""

    def fn(entity: Entity) -> dict[str, Any]:
        if_value = entity.get(if_field)
        if if_value is None or not if_match(if_value):
            return {}
        message = then_check(entity.get(then_field))
        if message is None:
            return {}
        return {
            ENTITY_KEY: [f"failed conditional validation given value of field '{if_field}'"],
            then_field: message,
        }

    return EntityCheck((if_field, then_field), fn, runs_with_invalid=(if_field,))


def custom(
    reads: Sequence[str], fn: CheckFn, *, runs_with_invalid: Sequence[str] | None = None
) -> EntityCheck:
    return EntityCheck(tuple(reads), fn, None if runs_with_invalid is None else tuple(runs_with_invalid))


# then-checks for ``conditional``


def must_be_null(value: Any) -> str | None:
    return None if value is None else "value must be null"


def must_be_set(value: Any) -> str | None:
    return "required field missing" if value is None else None


def must_be_one_of(*options: Any) -> Callable[[Any], str | None]:
    text = ", ".join(str(o) for o in options)

    def check(value: Any) -> str | None:
        return None if value in options else f"expected one of: {text}"

    return check


def equals(expected: Any) -> Callable[[Any], bool]:
    return lambda value: value == expected


def in_set(*options: Any) -> Callable[[Any], bool]:
    return lambda value: value in options


TIMESTAMP_FIELDS: Final = ("created_at", "updated_at")
