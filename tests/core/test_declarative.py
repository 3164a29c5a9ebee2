"""The declarative loader and writer: Kong's files accepted, broken ones rejected with every error located."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from zonegate.core import canonical, declarative
from zonegate.core.errors import DeclarativeConfigError

DATA = Path(__file__).parent.parent / "data"


def load_errors(document: Any) -> DeclarativeConfigError:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load(document)
    return info.value


def doc(**kinds: Any) -> dict[str, Any]:
    return {"_format_version": "3.0", **kinds}


@pytest.mark.parametrize("name", ["kong-docs-getting-started.yml", "kong-docs-full.yaml"])
def test_kong_documentation_files_load(name: str) -> None:
    config = declarative.loads((DATA / name).read_text())
    assert config.counts()["services"] >= 1
    assert config.dangling_references() == []


def test_full_example_resolves_nesting_into_foreign_keys() -> None:
    config = declarative.loads((DATA / "kong-docs-full.yaml").read_text())
    services = {s["name"]: s for s in config.of("services")}
    routes = {r["name"]: r for r in config.of("routes")}
    assert routes["example_route"]["service"] == {"id": services["example_service"]["id"]}
    assert routes["grpc_route"]["strip_path"] is False  # gRPC routes default strip_path to false
    plugins = {(p["name"], bool(p["route"]), bool(p["consumer"])): p for p in config.of("plugins")}
    rate_limit_route = plugins[("rate-limiting", True, False)]
    assert rate_limit_route["route"] == {"id": routes["example_route"]["id"]}
    assert rate_limit_route["service"] is None
    cors = plugins[("cors", True, False)]
    assert cors["service"] == {"id": services["example_service"]["id"]}
    targets = sorted(t["target"] for t in config.of("targets"))
    assert targets == ["192.0.2.10:8080", "[2001:db8::1]:8080", "backend.internal:8000"]
    consumer = config.of("consumers")[0]
    assert all(c["consumer"] == {"id": consumer["id"]} for c in config.of("acls"))


def test_ids_are_stable_and_match_kongs_scheme_for_named_entities() -> None:
    document = doc(services=[{"name": "billing", "host": "billing.internal"}])
    first = declarative.load(document).of("services")[0]["id"]
    second = declarative.load(document).of("services")[0]["id"]
    kong_style = uuid.uuid5(
        uuid.uuid5(uuid.UUID("fd02801f-0957-4a15-a55a-c8d9606f30b5"), "services"), "billing"
    )
    assert first == second == str(kong_style)


def test_unnamed_identical_entities_get_distinct_stable_ids() -> None:
    route = {"paths": ["/same"]}
    document = doc(services=[{"name": "s", "host": "h.internal", "routes": [route, dict(route)]}])
    ids = [r["id"] for r in declarative.load(document).of("routes")]
    assert len(set(ids)) == 2
    assert ids == [r["id"] for r in declarative.load(document).of("routes")]


def test_explicit_ids_are_kept_and_flat_references_accept_ids_and_names() -> None:
    service_id = "6b3c2e1a-0d4f-4c8e-9a7b-1f2e3d4c5b6a"
    document = doc(
        services=[{"id": service_id.upper(), "name": "s", "host": "h.internal"}],
        routes=[
            {"name": "by-id", "service": service_id, "paths": ["/a"]},
            {"name": "by-name", "service": "s", "paths": ["/b"]},
            {"name": "by-record", "service": {"id": service_id}, "paths": ["/c"]},
            {"name": "by-name-record", "service": {"name": "s"}, "paths": ["/d"]},
        ],
    )
    config = declarative.load(document)
    assert config.of("services")[0]["id"] == service_id
    assert {r["name"]: r["service"]["id"] for r in config.of("routes")} == dict.fromkeys(
        ["by-id", "by-name", "by-record", "by-name-record"], service_id
    )


def test_every_error_is_reported_with_its_path_and_kong_nested_table() -> None:
    document = doc(
        services=[
            {"name": "ok", "host": "ok.internal", "routes": [{"paths": ["/fine"]}, {"paths": ["nope"]}]},
            {"name": "bad", "host": "bad host"},
        ],
        routes=[{"service": "missing", "paths": ["/x"]}],
        consumers=[{"tags": ["a"]}],
    )
    error = load_errors(document)
    assert error.lines() == [
        "consumers[0]: at least one of these fields must be non-empty: 'custom_id', 'username'",
        "routes[0].service: invalid reference 'service: missing' (no such entry in 'services')",
        "services[0].routes[1].paths[0]: should start with: / (fixed path) or ~/ (regex path)",
        "services[1].host: invalid value: bad host",
    ]
    assert error.fields == {
        "services": [
            {"routes": [None, {"paths": ["should start with: / (fixed path) or ~/ (regex path)"]}]},
            {"host": "invalid value: bad host"},
        ],
        "routes": [{"service": "invalid reference 'service: missing' (no such entry in 'services')"}],
        "consumers": [
            {"@entity": ["at least one of these fields must be non-empty: 'custom_id', 'username'"]}
        ],
    }
    body = error.body()
    assert body["code"] == 14
    assert body["name"] == "invalid declarative configuration"
    assert body["message"].startswith("declarative config is invalid: ")
    assert len(body["flattened_errors"]) == 4


def test_children_of_a_broken_parent_are_not_reported_twice() -> None:
    document = doc(services=[{"name": "bad", "host": "bad host", "routes": [{"paths": ["/ok"]}]}])
    assert load_errors(document).lines() == ["services[0].host: invalid value: bad host"]


def test_duplicates_are_uniqueness_violations() -> None:
    document = doc(
        services=[{"name": "dup", "host": "a.internal"}, {"name": "dup", "host": "b.internal"}],
        consumers=[{"username": "u", "acls": [{"group": "g"}, {"group": "g"}]}],
    )
    lines = load_errors(document).lines()
    assert "services[1]: uniqueness violation: 'services' entity with primary key set to" in lines[1]
    assert lines[0].startswith("consumers[0].acls[1]: uniqueness violation: 'acls' entity with primary key")


def test_duplicate_unique_field_with_distinct_ids() -> None:
    document = doc(
        services=[
            {"id": "11111111-1111-4111-8111-111111111111", "name": "dup", "host": "a.internal"},
            {"id": "22222222-2222-4222-8222-222222222222", "name": "dup", "host": "b.internal"},
        ]
    )
    assert load_errors(document).lines() == [
        "services[1]: uniqueness violation: 'services' entity with name set to 'dup' already declared"
    ]


def test_nested_child_naming_another_parent_is_rejected() -> None:
    document = doc(
        services=[
            {"name": "a", "host": "a.internal", "routes": [{"paths": ["/a"], "service": "b"}]},
            {"name": "b", "host": "b.internal"},
        ]
    )
    # "b" is declared after the route's parent, so resolution order must not matter either way.
    assert load_errors(document).lines() == [
        "services[0].routes[0].service: conflicts with the enclosing 'services' entity"
    ]


@pytest.mark.parametrize(
    ("document", "line"),
    [
        ({"services": []}, "_format_version: required field missing"),
        ({"_format_version": "2.1"}, "_format_version: expected one of: 3.0"),
        ({"_format_version": "3.0", "widgets": []}, "widgets: unknown field"),
        ({"_format_version": "3.0", "services": {"name": "x"}}, "services: expected an array"),
        ({"_format_version": "3.0", "services": ["x"]}, "services[0]: expected a record"),
        ({"_format_version": "3.0", "_transform": "yes"}, "_transform: expected a boolean"),
        (["not", "a", "map"], "expected an object at the top of the file"),
    ],
)
def test_top_level_problems(document: Any, line: str) -> None:
    assert load_errors(document).lines() == [line]


def test_declarative_keys_must_be_given_not_generated() -> None:
    document = doc(consumers=[{"username": "u", "keyauth_credentials": [{}]}])
    assert load_errors(document).lines() == [
        "consumers[0].keyauth_credentials[0].key: required field missing"
    ]


def test_yaml_syntax_error_is_located() -> None:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.loads('_format_version: "3.0"\nservices:\n  - name: a\n   host: b\n')
    (line,) = info.value.lines()
    assert line.startswith("failed parsing declarative configuration: ")
    assert "(line 4, column 4)" in line


def test_json_input_and_empty_config() -> None:
    config = declarative.loads('{"_format_version": "3.0"}')
    assert config.is_empty()
    assert canonical.config_hash(config).config_hash == "0" * 32
    assert canonical.config_hash(config).hashes == dict.fromkeys(canonical.HASH_GROUPS, "0" * 32)


def test_sub_hashes_change_only_for_the_kind_that_changed() -> None:
    base = doc(
        services=[{"name": "s", "host": "s.internal", "routes": [{"name": "r", "paths": ["/a"]}]}],
        upstreams=[{"name": "u.internal", "targets": [{"target": "10.0.0.1:80"}]}],
        consumers=[{"username": "c"}],
    )
    before = canonical.config_hash(declarative.load(base))
    changed = yaml.safe_load(yaml.safe_dump(base))
    changed["services"][0]["routes"][0]["paths"] = ["/b"]
    after = canonical.config_hash(declarative.load(changed))
    assert after.changed_groups(before) == {"routes"}
    changed["upstreams"][0]["targets"][0]["weight"] = 5
    assert canonical.config_hash(declarative.load(changed)).changed_groups(before) == {"routes", "targets"}
    changed["consumers"][0]["custom_id"] = "x"
    assert "rest" in canonical.config_hash(declarative.load(changed)).changed_groups(before)
    assert before.changed_groups(None) == frozenset(canonical.HASH_GROUPS)


def test_writer_keeps_explicit_nulls_that_differ_from_defaults() -> None:
    config = declarative.load(doc(routes=[{"name": "r", "paths": ["/a"], "regex_priority": None}]))
    assert config.of("routes")[0]["regex_priority"] is None
    again = declarative.loads(declarative.dumps(config))
    assert again == config


def test_nested_writer_places_children_under_parents() -> None:
    config = declarative.loads((DATA / "kong-docs-full.yaml").read_text())
    document = declarative.to_document(config, nested=True)
    assert set(document) == {"_format_version", "services", "upstreams", "consumers", "plugins"}
    example = next(s for s in document["services"] if s.get("name") == "example_service")
    route = next(r for r in example["routes"] if r["name"] == "example_route")
    assert {p["name"] for p in route["plugins"]} == {"cors", "rate-limiting"}
    assert all("service" not in r for r in example["routes"])
    assert [p["name"] for p in document["plugins"]] == ["correlation-id"]
    consumer = document["consumers"][0]
    assert {"keyauth_credentials", "basicauth_credentials", "jwt_secrets", "acls", "plugins"} <= set(consumer)
