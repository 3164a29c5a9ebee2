"""Property tests of the declarative loader and config_hash.

A random configuration is described once as a small model, then rendered in many ways a user
could write it (nested or flat, references by name or by id, shuffled lists, shuffled keys,
YAML or JSON). Every rendering must give the same canonical bytes and hash; changing any one
field value must change the hash; and parse -> write -> parse is the identity.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zonegate.core import canonical, config_delta, declarative
from zonegate.core.config import Config

# -- a tiny model of a configuration ------------------------------------------------------------


@dataclass
class Model:
    services: list[dict[str, Any]] = field(default_factory=list)  # each has "routes" and "plugins"
    consumers: list[dict[str, Any]] = field(default_factory=list)  # each has credentials
    upstreams: list[dict[str, Any]] = field(default_factory=list)  # each has "targets"
    global_plugins: list[dict[str, Any]] = field(default_factory=list)


names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
segments = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)


@st.composite
def models(draw: st.DrawFn) -> Model:
    model = Model()
    service_names = draw(st.lists(names, min_size=0, max_size=4, unique=True))
    for index, name in enumerate(service_names):
        service: dict[str, Any] = {
            "name": f"svc-{name}",
            "host": f"{name}.internal",
            "port": draw(st.integers(1, 65535)),
            "routes": [],
            "plugins": [],
        }
        if draw(st.booleans()):
            service["retries"] = draw(st.integers(0, 10))
        route_paths = draw(st.lists(segments, min_size=0, max_size=3, unique=True))
        for r_index, segment in enumerate(route_paths):
            route: dict[str, Any] = {"paths": [f"/{name}/{segment}"], "plugins": []}
            if draw(st.booleans()):
                route["name"] = f"route-{index}-{r_index}"
            if draw(st.booleans()):
                route["methods"] = draw(
                    st.lists(st.sampled_from(["GET", "POST", "PUT"]), min_size=1, unique=True)
                )
            if draw(st.booleans()):
                route["plugins"].append({"name": "key-auth", "config": {"key_names": ["apikey"]}})
            service["routes"].append(route)
        if draw(st.booleans()):
            service["plugins"].append(
                {"name": "rate-limiting", "config": {"minute": draw(st.integers(1, 100))}}
            )
        model.services.append(service)
    for name in draw(st.lists(names, min_size=0, max_size=3, unique=True)):
        consumer: dict[str, Any] = {"username": f"user-{name}", "creds": {}}
        if draw(st.booleans()):
            consumer["creds"]["keyauth_credentials"] = [{"key": f"key-{name}"}]
        if draw(st.booleans()):
            consumer["creds"]["acls"] = [
                {"group": g} for g in draw(st.lists(segments, max_size=2, unique=True))
            ]
        model.consumers.append(consumer)
    for name in draw(st.lists(names, min_size=0, max_size=2, unique=True)):
        ports = draw(st.lists(st.integers(1000, 9999), min_size=0, max_size=3, unique=True))
        model.upstreams.append(
            {
                "name": f"up-{name}.internal",
                "targets": [{"target": f"10.0.0.1:{p}", "weight": draw(st.integers(0, 1000))} for p in ports],
            }
        )
    if draw(st.booleans()):
        model.global_plugins.append({"name": "correlation-id", "config": {"header_name": "X-Req"}})
    return model


# -- renderings -----------------------------------------------------------------------------------


def render_nested(model: Model) -> dict[str, Any]:
    services = []
    for s in model.services:
        service = {k: v for k, v in s.items() if k not in ("routes", "plugins")}
        if s["routes"]:
            service["routes"] = [
                {
                    **{k: v for k, v in r.items() if k != "plugins"},
                    **({"plugins": r["plugins"]} if r["plugins"] else {}),
                }
                for r in s["routes"]
            ]
        if s["plugins"]:
            service["plugins"] = list(s["plugins"])
        services.append(service)
    consumers = [{"username": c["username"], **c["creds"]} for c in model.consumers]
    document: dict[str, Any] = {"_format_version": "3.0"}
    if services:
        document["services"] = services
    if consumers:
        document["consumers"] = consumers
    if model.upstreams:
        document["upstreams"] = [dict(u) for u in model.upstreams]
    if model.global_plugins:
        document["plugins"] = list(model.global_plugins)
    return document


def render_flat(model: Model, by_id: dict[tuple[str, str], str] | None) -> dict[str, Any]:
    """Every kind at the top; references by name, or by id when ``by_id`` maps (kind, name) -> id."""

    def ref(kind: str, name: str) -> Any:
        return by_id[(kind, name)] if by_id else name

    document: dict[str, Any] = {"_format_version": "3.0"}
    services, routes, plugins, consumers, upstreams, targets = [], [], [], [], [], []
    creds: dict[str, list[Any]] = {}
    for s in model.services:
        services.append({k: v for k, v in s.items() if k not in ("routes", "plugins")})
        for r in s["routes"]:
            route = {k: v for k, v in r.items() if k != "plugins"}
            route["service"] = ref("services", s["name"])
            if r["plugins"]:
                # A route plugin needs the route's id to be referenced flat; nest it under the route.
                route["plugins"] = r["plugins"]
            routes.append(route)
        for p in s["plugins"]:
            plugins.append({**p, "service": ref("services", s["name"])})
    for c in model.consumers:
        consumers.append({"username": c["username"]})
        for kind, items in c["creds"].items():
            for item in items:
                creds.setdefault(kind, []).append({**item, "consumer": ref("consumers", c["username"])})
    for u in model.upstreams:
        upstreams.append({"name": u["name"]})
        for t in u["targets"]:
            targets.append({**t, "upstream": ref("upstreams", u["name"])})
    plugins += model.global_plugins
    for kind, items in (
        ("services", services),
        ("routes", routes),
        ("plugins", plugins),
        ("consumers", consumers),
        ("upstreams", upstreams),
        ("targets", targets),
        *creds.items(),
    ):
        if items:
            document[kind] = items
    return document


def shuffled(value: Any, rng: random.Random) -> Any:
    """Shuffle key order everywhere and the order of entity lists (not of field values)."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: (shuffled(v, rng) if k in ENTITY_LISTS or isinstance(v, dict) else v) for k, v in items}
    if isinstance(value, list):
        items = [shuffled(v, rng) for v in value]
        rng.shuffle(items)
        return items
    return value


ENTITY_LISTS = {
    "services", "routes", "plugins", "consumers", "upstreams", "targets",
    "keyauth_credentials", "acls",
}  # fmt: skip


def ids_by_name(config: Config) -> dict[tuple[str, str], str]:
    out = {}
    for kind, key in (("services", "name"), ("consumers", "username"), ("upstreams", "name")):
        for entity in config.of(kind):
            out[(kind, entity[key])] = entity["id"]
    return out


def through_text(document: dict[str, Any], as_json: bool) -> Config:
    text = json.dumps(document) if as_json else yaml.safe_dump(document)
    return declarative.loads(text)


PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(models(), st.randoms(use_true_random=False), st.booleans())
def test_hash_ignores_key_order_list_order_and_nesting_style(
    model: Model, rng: random.Random, as_json: bool
) -> None:
    nested = declarative.load(render_nested(model))
    expected = canonical.config_hash(nested)
    renderings = [
        render_nested(model),
        shuffled(render_nested(model), rng),
        render_flat(model, None),
        shuffled(render_flat(model, None), rng),
        render_flat(model, ids_by_name(nested)),
    ]
    for document in renderings:
        config = through_text(document, as_json)
        assert canonical.canonical_bytes(config) == canonical.canonical_bytes(nested)
        assert canonical.config_hash(config) == expected


@PROPERTY_SETTINGS
@given(models(), st.booleans(), st.booleans())
def test_parse_write_parse_is_identity(model: Model, nested_output: bool, as_json: bool) -> None:
    config = declarative.load(render_nested(model))
    text = declarative.dumps(config, nested=nested_output, fmt="json" if as_json else "yaml")
    again = declarative.loads(text)
    assert again == config
    assert canonical.canonical_bytes(again) == canonical.canonical_bytes(config)


def _mutations(document: dict[str, Any]) -> list[tuple[str, Any]]:
    """(description, mutated copy) for one change of each field value found in the document."""
    out: list[tuple[str, Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.startswith("_"):
                    continue
                walk(value, [*path, key])
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, [*path, index])
        else:
            changed = _changed(path[-1], node)
            if changed is not None:
                copy = json.loads(json.dumps(document))
                target = copy
                for part in path[:-1]:
                    target = target[part]
                target[path[-1]] = changed
                out.append((".".join(map(str, path)), copy))

    walk(document, [])
    return out


def _changed(key: Any, value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        if key in ("port",):
            return value + 1 if value < 65535 else value - 1
        if key == "weight":
            return value + 1 if value < 65535 else value - 1
        return value + 1 if value < 10 else value - 1
    if isinstance(value, str):
        if key == "target" or (isinstance(key, int) and value.startswith("10.0.0.1:")):
            return value.replace("10.0.0.1", "10.0.0.2")
        if value.startswith("/"):
            return value + "Q"
        if value in ("GET", "POST", "PUT"):
            return {"GET": "DELETE", "POST": "PATCH", "PUT": "HEAD"}[value]
        # Generated names are lower case, so an upper-case prefix never collides with another.
        return "Q" + value
    return None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models())
def test_hash_changes_when_any_field_value_changes(model: Model) -> None:
    document = render_nested(model)
    base = canonical.config_hash(declarative.load(document))
    for where, mutated in _mutations(document):
        changed = canonical.config_hash(declarative.load(mutated))
        assert changed.config_hash != base.config_hash, where


@PROPERTY_SETTINGS
@given(models())
def test_one_pass_encoding_is_the_canonical_document_and_its_hash(model: Model) -> None:
    config = declarative.load(render_nested(model))
    raw, hashes = canonical.encode_config(config)
    assert raw == canonical.canonical_bytes(config)
    assert hashes == canonical.config_hash(config)
    # The bytes are the canonical document, with the keys of every object in sorted order.

    def sorted_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        assert keys == sorted(keys)
        return dict(pairs)

    assert json.loads(raw, object_pairs_hook=sorted_object) == canonical.canonical_document(config)


@PROPERTY_SETTINGS
@given(st.lists(models(), min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_encoding_with_the_cache_equals_encoding_without(models_: list[Model], rng: random.Random) -> None:
    cache = canonical.EncodingCache()
    previous: Config | None = None
    for model in models_:
        config = declarative.load(render_nested(model))
        if previous is not None:
            # As a control plane's tracker does: unchanged entities are the previous objects.
            kept = {e["id"]: e for _kind, e in previous if rng.random() < 0.7}
            config = Config.build(
                {
                    kind: [kept.get(e["id"], e) if kept.get(e["id"]) == e else e for e in config.of(kind)]
                    for kind in config.entities
                }
            )
        assert canonical.encode_config(config, cache) == canonical.encode_config(config)
        if previous is not None:
            # Whole kinds kept as the very same tuples (as the tracker keeps unchanged kinds).
            sources = {
                kind: previous if kind not in config.entities or rng.random() < 0.5 else config
                for kind in {*config.entities, *previous.entities}
            }
            mixed = Config(
                {kind: source.entities[kind] for kind, source in sources.items() if kind in source.entities}
            )
            assert canonical.encode_config(mixed, cache) == canonical.encode_config(mixed)
            assert canonical.encode_config(config, cache) == canonical.encode_config(config)
        previous = config


@PROPERTY_SETTINGS
@given(st.lists(models(), min_size=2, max_size=5))
def test_encoding_a_change_with_the_cache_equals_encoding_without(models_: list[Model]) -> None:
    # As the publisher does: each config is the last one with a delta applied (unchanged
    # entities shared), and the cache splices the delta's entities into the last bytes (here
    # whatever the size of the change: these configs are small).
    cache = canonical.EncodingCache()
    config = declarative.load(render_nested(models_[0]))
    canonical.encode_config(config, cache)
    ratio, canonical._SPLICE_RATIO = canonical._SPLICE_RATIO, 0
    try:
        for model in models_[1:]:
            delta = config_delta.diff(config, declarative.load(render_nested(model)))
            changed = config_delta.apply(config, delta)
            assert canonical.encode_config(changed, cache, config_delta.Change(config, delta)) == (
                canonical.encode_config(changed)
            )
            config = changed
    finally:
        canonical._SPLICE_RATIO = ratio
    # A change whose base is not what the cache encoded last is not spliced in.
    first = declarative.load(render_nested(models_[0]))
    stale = config_delta.Change(first, config_delta.diff(first, config))
    assert canonical.encode_config(config, cache, stale) == canonical.encode_config(config)
