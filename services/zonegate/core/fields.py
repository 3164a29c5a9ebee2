"""Field types: the building blocks every entity schema is declared from.

A field validates one JSON-like value and returns it normalised (defaults filled in nested
records, sets de-duplicated) or an error in Kong's nested shape. Validators run in a fixed
order and the first failure is the field's error, as in Kong (``kong/db/schema/init.lua``), so
messages match what Kong users see. ``None`` is Kong's ``null``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

Kind = Literal["string", "integer", "number", "boolean", "array", "set", "map", "record", "foreign", "any"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

# A validator gets a value of the right type and returns an error message or None.
Validator = Callable[[Any], "str | None"]

UUID_RE: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)

_TYPE_ERRORS: Final[dict[str, str]] = {
    "string": "expected a string",
    "integer": "expected an integer",
    "number": "expected a number",
    "boolean": "expected a boolean",
    "array": "expected an array",
    "set": "expected a set",
    "map": "expected a map",
    "record": "expected a record",
    "foreign": "expected a record",
}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a schema. Build them with the helpers below, not directly."""

    kind: Kind
    required: bool = False
    default: Any = MISSING
    description: str = ""
    unique: bool = False
    auto: bool = False
    validators: tuple[Validator, ...] = ()
    elements: Field | None = None  # array and set
    keys: Field | None = None  # map
    values: Field | None = None  # map
    fields: tuple[tuple[str, Field], ...] = ()  # record
    reference: str = ""  # foreign: the referenced entity kind
    on_delete: Literal["restrict", "cascade"] = "restrict"
    len_min: int | None = None
    len_max: int | None = None
    record_checks: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = ()

    def __call__(self, **changes: Any) -> Field:
        """Derive a variant, as Kong's ``typedefs.host { required = true }``."""
        return replace(self, **changes)

    def default_value(self) -> Any:
        if isinstance(self.default, list | dict):
            return copy.deepcopy(self.default)  # every entity gets its own mutable default
        return self.default

    def validate(self, value: Any) -> tuple[Any, Any]:
        """Return (normalised value, None) or (None, error)."""
        if value is None:
            return None, None
        kind_error = self._check_kind(value)
        if kind_error is not None:
            return None, kind_error
        if self.kind in ("array", "set"):
            return self._validate_list(value)
        if self.kind == "map":
            return self._validate_map(value)
        if self.kind == "record":
            return self._validate_record(value)
        if self.kind == "foreign":
            return self._validate_foreign(value)
        if self.kind == "integer" and isinstance(value, float):
            value = int(value)
        if self.kind == "string":
            # Kong gives every string a minimum length of 1 unless the schema says otherwise.
            length_error = self._check_length(len(value), default_min=1)
            if length_error is not None:
                return None, length_error
        for validator in self.validators:
            message = validator(value)
            if message is not None:
                return None, message
        return value, None

    def _check_kind(self, value: Any) -> str | None:
        ok: bool
        if self.kind == "any":
            ok = True
        elif self.kind == "string":
            ok = isinstance(value, str)
        elif self.kind == "integer":
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer()
            )
        elif self.kind == "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif self.kind == "boolean":
            ok = isinstance(value, bool)
        elif self.kind in ("array", "set"):
            ok = isinstance(value, list | tuple)
        else:
            ok = isinstance(value, Mapping)
        return None if ok else _TYPE_ERRORS[self.kind]

    def _check_length(self, length: int, default_min: int | None = None) -> str | None:
        len_min = self.len_min if self.len_min is not None else default_min
        if len_min is not None and length < len_min:
            return f"length must be at least {len_min}"
        if self.len_max is not None and length > self.len_max:
            return f"length must be at most {self.len_max}"
        return None

    def _validate_list(self, value: Sequence[Any]) -> tuple[Any, Any]:
        items = list(value)
        if self.kind == "set":
            # Kong's sets keep the first occurrence of each value.
            unique: list[Any] = []
            for item in items:
                if item not in unique:
                    unique.append(item)
            items = unique
        length_error = self._check_length(len(items))
        if length_error is not None:
            return None, length_error
        if self.elements is None:
            return items, None
        out: list[Any] = []
        errors: list[Any] = []
        failed = False
        for item in items:
            if item is None:
                normalised, error = None, "required field missing"
            else:
                normalised, error = self.elements.validate(item)
            out.append(normalised)
            errors.append(error)
            failed = failed or error is not None
        if failed:
            return None, errors
        for validator in self.validators:
            message = validator(out)
            if message is not None:
                return None, message
        return out, None

    def _validate_map(self, value: Mapping[Any, Any]) -> tuple[Any, Any]:
        length_error = self._check_length(len(value))
        if length_error is not None:
            return None, length_error
        out: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for key, item in value.items():
            if self.keys is not None:
                _, key_error = self.keys.validate(key)
                if key_error is not None:
                    # Kong reports a bad key as the map's own error, not under the key.
                    return None, key_error
            if self.values is not None:
                normalised, error = self.values.validate(item)
                if error is not None:
                    errors[str(key)] = error
                    continue
                item = normalised
            out[str(key)] = item
        if errors:
            return None, errors
        return out, None

    def _validate_record(self, value: Mapping[str, Any]) -> tuple[Any, Any]:
        if not self.fields:
            # A free-form object (e.g. a plugin config before plugin schemas exist).
            return copy.deepcopy(dict(value)), None
        out, errors = validate_fields(self.fields, value)
        if not errors:
            for check in self.record_checks:
                errors.update(check(out))
        if errors:
            return None, errors
        return out, None

    def _validate_foreign(self, value: Mapping[str, Any]) -> tuple[Any, Any]:
        fk_id = value.get("id")
        extra = [k for k in value if k != "id"]
        if extra:
            return None, {k: "unknown field" for k in extra}
        if fk_id is None:
            return None, {"id": "required field missing"}
        if not isinstance(fk_id, str):
            return None, {"id": "expected a string"}
        if not UUID_RE.match(fk_id):
            return None, {"id": "expected a valid UUID"}
        return {"id": fk_id.lower()}, None


def validate_fields(
    fields: Sequence[tuple[str, Field]], value: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate a record's fields: unknown fields, missing required ones, defaults, each value.

    Returns the normalised record (every declared field present, ``None`` when unset) and
    the error table (empty when valid).
    """
    known = {name for name, _ in fields}
    errors: dict[str, Any] = {name: "unknown field" for name in value if name not in known}
    out: dict[str, Any] = {}
    for name, spec in fields:
        raw = value.get(name, MISSING)
        if raw is MISSING:
            raw = spec.default_value()
            if raw is MISSING:
                raw = None
            elif spec.kind == "record" and isinstance(raw, Mapping):
                # A default record still gets its own nested defaults filled in.
                raw = dict(raw)
        if raw is None:
            if spec.required:
                errors[name] = "required field missing"
            out[name] = None
            continue
        normalised, error = spec.validate(raw)
        if error is not None:
            errors[name] = error
            out[name] = None
        else:
            out[name] = normalised
    return out, errors


# -- constructors ------------------------------------------------------------------------


def string(*validators: Validator, **options: Any) -> Field:
    return Field("string", validators=validators, **options)


def integer(*validators: Validator, **options: Any) -> Field:
    return Field("integer", validators=validators, **options)


def number(*validators: Validator, **options: Any) -> Field:
    return Field("number", validators=validators, **options)


def boolean(**options: Any) -> Field:
    return Field("boolean", **options)


def array(elements: Field, **options: Any) -> Field:
    return Field("array", elements=elements, **options)


def set_of(elements: Field, **options: Any) -> Field:
    return Field("set", elements=elements, **options)


def map_of(keys: Field, values: Field, **options: Any) -> Field:
    return Field("map", keys=keys, values=values, **options)


def record(*fields: tuple[str, Field], **options: Any) -> Field:
    return Field("record", fields=tuple(fields), **options)


def foreign(reference: str, **options: Any) -> Field:
    return Field("foreign", reference=reference, **options)


def any_value(**options: Any) -> Field:
    return Field("any", **options)


# -- validators (Kong's wording) ------------------------------------------------------------


def one_of(*options: Any) -> Validator:
    text = ", ".join(str(o) for o in options)

    def check(value: Any) -> str | None:
        return None if value in options else f"expected one of: {text}"

    return check


def between(low: float, high: float) -> Validator:
    def check(value: Any) -> str | None:
        if low <= value <= high:
            return None
        return f"value should be between {_num(low)} and {_num(high)}"

    return check


def _num(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else str(n)


def gt(limit: float) -> Validator:
    def check(value: Any) -> str | None:
        return None if value > limit else f"value must be greater than {_num(limit)}"

    return check


def length_between(low: int, high: int | None = None) -> Validator:
    def check(value: Any) -> str | None:
        if len(value) < low:
            return f"length must be at least {low}"
        if high is not None and len(value) > high:
            return f"length must be at most {high}"
        return None

    return check


def starts_with(prefix: str) -> Validator:
    def check(value: Any) -> str | None:
        return None if value.startswith(prefix) else f"should start with: {prefix}"

    return check


def matches(pattern: str, error: str | None = None) -> Validator:
    compiled = re.compile(pattern)

    def check(value: Any) -> str | None:
        if compiled.search(value):
            return None
        return error if error is not None else f"invalid value: {value}"

    return check


def matches_none(pattern: str, error: str) -> Validator:
    compiled = re.compile(pattern)

    def check(value: Any) -> str | None:
        return error if compiled.search(value) else None

    return check


def is_uuid(value: Any) -> str | None:
    return None if UUID_RE.match(value) else "expected a valid UUID"


def contains(wanted: Any) -> Validator:
    def check(value: Any) -> str | None:
        return None if wanted in value else f"expected to contain: {wanted}"

    return check


# Fields that Kong fills itself and a client may omit.
AUTO_FIELDS: Final = ("id", "created_at", "updated_at")
