"""Kong's declarative format (``_format_version: "3.0"``), read and written.

Reading accepts both styles Kong documents, freely mixed: *nested* (routes under services,
plugins under services/routes/consumers, credentials under consumers, targets under
upstreams, snis under certificates) and *flat* (every kind at the top, foreign keys by id or
by name). Every error is collected, not just the first, each located by its path in the file
(``services[0].routes[1].paths[0]``), and the error table mirrors the file's own nesting.

Entities without an id get a stable one (uuid5), derived the way Kong derives it where Kong
can (from the unique name, or the cache key for plugins, targets and ACLs) and otherwise from
the entity's validated content, so the same file yields the same ids on every machine and
the style of nesting never changes an id.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import yaml

from zonegate.core import yaml_writer
from zonegate.core.config import Config
from zonegate.core.entities import BY_NAME, KINDS, NESTED
from zonegate.core.entities.credentials import is_password_digest, password_digest
from zonegate.core.errors import ENTITY_KEY, DeclarativeConfigError
from zonegate.core.fields import MISSING, UUID_RE
from zonegate.core.schema import TIMESTAMP_FIELDS, Entity, EntitySchema

FORMAT_VERSION: Final = "3.0"
META_KEYS: Final = ("_format_version", "_transform", "_comment", "_workspace", "_info")

# Kong's namespace for declarative ids: ``uuid5(uuid5(NS, kind), key)`` gives the same ids
# Kong gives to named entities.
_KONG_NAMESPACE: Final = uuidlib.UUID("fd02801f-0957-4a15-a55a-c8d9606f30b5")
_KIND_NAMESPACES: Final = {kind: uuidlib.uuid5(_KONG_NAMESPACE, kind) for kind in KINDS}

Path = tuple[str | int, ...]

# PyYAML's libyaml-backed safe loader is several times faster; same results, same error marks.
_YAML_LOADER: Final[type[yaml.SafeLoader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def stable_id(kind: str, key: str) -> str:
    return str(uuidlib.uuid5(_KIND_NAMESPACES[kind], key))


def render_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# -- parsing text --------------------------------------------------------------------------


def parse_text(text: str) -> Any:
    """YAML or JSON (JSON is YAML); a syntax error becomes one located DeclarativeConfigError."""
    try:
        if text.lstrip().startswith("{"):
            return json.loads(text)
        return yaml.load(text, Loader=_YAML_LOADER)
    except json.JSONDecodeError as exc:
        message = (
            f"failed parsing declarative configuration: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        )
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        message = f"failed parsing declarative configuration: {problem}{where}"
    raise DeclarativeConfigError({ENTITY_KEY: [message]})


def loads(text: str) -> Config:
    return load(parse_text(text))


# -- error collection ------------------------------------------------------------------------


class _ErrorTree:
    """Errors placed at their path, rendered as Kong's nested table (lists padded with null)."""

    def __init__(self) -> None:
        self.root: dict[str | int, Any] = {}

    def add(self, path: Path, errors: Mapping[str, Any]) -> None:
        node = self.root
        for part in path:
            node = node.setdefault(part, {})
        for key, value in errors.items():
            if key == ENTITY_KEY:
                node.setdefault(ENTITY_KEY, []).extend(value)
            else:
                node.setdefault(key, value)

    def __bool__(self) -> bool:
        return bool(self.root)

    def render(self) -> dict[str, Any]:
        return _render(self.root)  # type: ignore[no-any-return]

    def raise_if_any(self) -> None:
        if self.root:
            raise DeclarativeConfigError(self.render())


def _render(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(k, int) for k in node):
        out: list[Any] = [None] * (max(node) + 1)
        for index, value in node.items():
            out[index] = _render(value)
        return out
    return {str(k): _render(v) for k, v in node.items()}


# -- collecting entities from both styles --------------------------------------------------------


@dataclass(eq=False)
class _Raw:
    kind: str
    data: dict[str, Any]
    path: Path
    parent: _Raw | None = None
    parent_fk: str | None = None
    id: str | None = None
    failed: bool = False
    entity: Entity | None = field(default=None, repr=False)


def _collect(data: Mapping[str, Any], errors: _ErrorTree) -> dict[str, list[_Raw]]:
    raws: dict[str, list[_Raw]] = {kind: [] for kind in KINDS}

    def walk(kind: str, items: Any, path: Path, parent: _Raw | None, parent_fk: str | None) -> None:
        if not isinstance(items, list):
            errors.add(path[:-1], {str(path[-1]): "expected an array"})
            return
        children = dict(NESTED.get(kind, ()))
        for index, item in enumerate(items):
            item_path = (*path, index)
            if not isinstance(item, Mapping):
                errors.add(item_path, {ENTITY_KEY: ["expected a record"]})
                continue
            own = {k: v for k, v in item.items() if k not in children}
            raw = _Raw(kind, own, item_path, parent, parent_fk)
            raws[kind].append(raw)
            for child_kind, fk in children.items():
                if child_kind in item and item[child_kind] is not None:
                    walk(child_kind, item[child_kind], (*item_path, child_kind), raw, fk)

    for key, value in data.items():
        if key in META_KEYS:
            continue
        if key not in BY_NAME:
            errors.add((), {key: "unknown field"})
            continue
        if value is None:
            continue
        walk(key, value, (key,), None, None)
    return raws


def _check_meta(data: Any, errors: _ErrorTree) -> bool:
    if not isinstance(data, Mapping):
        errors.add((), {ENTITY_KEY: ["expected an object at the top of the file"]})
        return False
    version = data.get("_format_version")
    if version is None:
        errors.add((), {"_format_version": "required field missing"})
    elif str(version) != FORMAT_VERSION:
        errors.add((), {"_format_version": f"expected one of: {FORMAT_VERSION}"})
    transform = data.get("_transform")
    if transform is not None and not isinstance(transform, bool):
        errors.add((), {"_transform": "expected a boolean"})
    return True


# -- resolving, validating, identifying ------------------------------------------------------------


class _Index:
    """Ids and unique keys seen so far, per kind, to resolve foreign keys and catch duplicates."""

    def __init__(self) -> None:
        self.ids: dict[str, dict[str, _Raw]] = {kind: {} for kind in KINDS}
        self.keys: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}

    def resolve(self, kind: str, ref: str) -> str | None:
        lowered = ref.lower()
        if UUID_RE.match(ref) and lowered in self.ids[kind]:
            return lowered
        return self.keys[kind].get(ref)


def _reference_text(value: Any) -> str | None:
    """A flat foreign key: an id or a name, bare or as ``{id: ..}`` / ``{name: ..}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and len(value) == 1:
        (inner,) = value.values()
        if isinstance(inner, str):
            return inner
    return None


_FAILED_PARENT: Final = "00000000-0000-0000-0000-000000000000"


def _resolve_foreign_keys(raw: _Raw, schema: EntitySchema, index: _Index) -> dict[str, Any]:
    errors: dict[str, Any] = {}
    for name, spec in schema.foreign_keys():
        if raw.parent is not None and name == raw.parent_fk:
            parent_id = raw.parent.id if not raw.parent.failed and raw.parent.id else _FAILED_PARENT
            given = raw.data.get(name)
            if given is not None:
                text = _reference_text(given)
                if text is None or index.resolve(spec.reference, text) not in (parent_id, None):
                    errors[name] = f"conflicts with the enclosing '{spec.reference}' entity"
                    continue
            raw.data[name] = {"id": parent_id}
            continue
        value = raw.data.get(name)
        if value is None:
            continue
        text = _reference_text(value)
        if text is None:
            errors[name] = "expected an id or a name"
            continue
        resolved = index.resolve(spec.reference, text)
        if resolved is None:
            errors[name] = f"invalid reference '{name}: {text}' (no such entry in '{spec.reference}')"
            continue
        raw.data[name] = {"id": resolved}
    return errors


def _identity_key(kind: str, schema: EntitySchema, entity: Entity) -> str | None:
    """The natural key Kong derives ids from, or None when the entity has none."""
    if schema.cache_key:
        parts = []
        for name in schema.cache_key:
            value = entity.get(name)
            parts.append(value["id"] if isinstance(value, dict) else ("" if value is None else str(value)))
        return f"{kind}:" + ":".join(parts)
    if schema.endpoint_key and entity.get(schema.endpoint_key) is not None:
        key = str(entity[schema.endpoint_key])
        if not schema.field(schema.endpoint_key).unique:
            for name, spec in schema.foreign_keys():
                if spec.on_delete == "cascade" and entity.get(name):
                    key += ":" + entity[name]["id"]
        return key
    return None


def _content_key(entity: Entity) -> str:
    content = {k: v for k, v in entity.items() if k != "id"}
    return "content:" + json.dumps(content, sort_keys=True, separators=(",", ":"))


def _uniqueness(
    kind: str, schema: EntitySchema, entity: Entity, seen: dict[str, dict[Any, str]]
) -> dict[str, Any]:
    errors: dict[str, Any] = {}
    checks: list[tuple[str, Any]] = [("primary key", entity["id"])]
    checks += [(name, entity.get(name)) for name in schema.unique_fields()]
    if schema.cache_key:
        combined = tuple(
            (v["id"] if isinstance(v, dict) else v) for v in (entity.get(n) for n in schema.cache_key)
        )
        checks.append((", ".join(schema.cache_key), combined))
    for name, value in checks:
        if value is None:
            continue
        bucket = seen.setdefault(name, {})
        hashable = json.dumps(value, sort_keys=True)
        if hashable in bucket:
            shown = (
                value
                if not isinstance(value, tuple)
                else ", ".join("null" if v is None else str(v) for v in value)
            )
            errors[ENTITY_KEY] = [
                f"uniqueness violation: '{kind}' entity with {name} set to '{shown}' already declared"
            ]
            break
        bucket[hashable] = entity["id"]
    return errors


def _auto_field_errors(schema: EntitySchema, entity: Entity) -> dict[str, Any]:
    # The Admin API generates keys and secrets; a declarative file must state them, since a
    # random value in a file nobody can read back would lock every client out.
    return {
        name: "required field missing"
        for name, spec in schema.fields
        if spec.auto and name not in ("id", *TIMESTAMP_FIELDS) and entity.get(name) is None
    }


def load(data: Any) -> Config:
    """Validate a parsed declarative document into a Config, or raise with every error located."""
    errors = _ErrorTree()
    if not _check_meta(data, errors):
        errors.raise_if_any()
    raws = _collect(data, errors)
    index = _Index()
    result: dict[str, list[Entity]] = {}
    for kind in KINDS:
        schema = BY_NAME[kind]
        seen: dict[str, dict[Any, str]] = {}
        content_counts: Counter[str] = Counter()
        for raw in raws[kind]:
            for stamp in TIMESTAMP_FIELDS:
                raw.data.pop(stamp, None)
            fk_errors = _resolve_foreign_keys(raw, schema, index)
            entity, entity_errors = schema.check(raw.data)
            entity_errors.update(fk_errors)
            if not entity_errors:
                entity_errors.update(_auto_field_errors(schema, entity))
            if entity_errors:
                raw.failed = True
                errors.add(raw.path, entity_errors)
                continue
            if entity["id"] is not None:
                entity["id"] = entity["id"].lower()
            else:
                key = _identity_key(kind, schema, entity)
                if key is None:
                    key = _content_key(entity)
                    content_counts[key] += 1
                    if content_counts[key] > 1:
                        key += f"#{content_counts[key]}"
                entity["id"] = stable_id(kind, key)
            unique_errors = _uniqueness(kind, schema, entity, seen)
            if unique_errors:
                raw.failed = True
                errors.add(raw.path, unique_errors)
                continue
            raw.id = entity["id"]
            raw.entity = entity
            index.ids[kind][entity["id"]] = raw
            if schema.endpoint_key and entity.get(schema.endpoint_key) is not None:
                index.keys[kind].setdefault(str(entity[schema.endpoint_key]), entity["id"])
            result.setdefault(kind, []).append(_without_timestamps(entity))
    errors.raise_if_any()
    _hash_clear_passwords(result.get("basicauth_credentials", []))
    return Config.build(result)


def _hash_clear_passwords(credentials: list[Entity]) -> None:
    """Kong hashes basic-auth passwords when it loads a file (its ``_transform``); so do we, with
    the control plane's rule: a value that is already a digest (an export) is kept, so a config
    never holds a clear password, whether it goes to the LMDB cache, a snapshot or an export."""
    for credential in credentials:
        password = credential["password"]
        if not is_password_digest(password):
            credential["password"] = password_digest(credential["consumer"]["id"], password)


def _without_timestamps(entity: Entity) -> Entity:
    return {k: v for k, v in entity.items() if k not in TIMESTAMP_FIELDS}


# -- writing -------------------------------------------------------------------------------


def _export_entity(kind: str, entity: Entity, omit: str | None = None) -> dict[str, Any]:
    """Fields in schema order; foreign keys as plain ids; nulls only where they differ from absence."""
    schema = BY_NAME[kind]
    out: dict[str, Any] = {}
    for name, spec in schema.fields:
        if name == omit or name in TIMESTAMP_FIELDS:
            continue
        value = entity.get(name)
        if value is None:
            # Absent means "default"; an explicit null on a field with a default must survive.
            if spec.default is not MISSING:
                out[name] = None
            continue
        out[name] = value["id"] if spec.kind == "foreign" else value
    return out


def to_document(config: Config, *, nested: bool = False) -> dict[str, Any]:
    """The declarative document for a config: flat (Kong's ``db_export``) or nested."""
    document: dict[str, Any] = {"_format_version": FORMAT_VERSION}
    if not nested:
        for kind in KINDS:
            if config.of(kind):
                document[kind] = [_export_entity(kind, e) for e in config.of(kind)]
        return document

    placed: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, id) -> exported dict, to attach children

    def home(kind: str, entity: Entity) -> tuple[str, str] | None:
        """The parent kind and fk under which this entity nests, most specific first."""
        for parent_kind in ("routes", "services", "consumers", "upstreams", "certificates"):
            for child_kind, fk in NESTED.get(parent_kind, ()):
                if child_kind == kind and entity.get(fk):
                    return parent_kind, fk
        return None

    for kind in KINDS:
        for entity in config.of(kind):
            where = home(kind, entity)
            if where is None:
                exported = _export_entity(kind, entity)
                document.setdefault(kind, []).append(exported)
            else:
                parent_kind, fk = where
                exported = _export_entity(kind, entity, omit=fk)
                placed[(parent_kind, entity[fk]["id"])].setdefault(kind, []).append(exported)
            placed[(kind, entity["id"])] = exported
    return document


def dumps(config: Config, *, nested: bool = False, fmt: Literal["yaml", "json"] = "yaml") -> str:
    document = to_document(config, nested=nested)
    if fmt == "json":
        return json.dumps(document, indent=2) + "\n"
    return yaml_writer.dumps(document)
