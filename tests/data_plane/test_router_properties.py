"""The indexed router agrees with a slow reference that states Kong's rules plainly.

The reference looks at every route for every request, keeps those whose conditions all hold,
and sorts them by Kong's traditional_compatible priority (kong/router/transform.lua
get_priority), most significant first:

    1. how many of methods, hosts, headers, snis, paths the route sets,
    2. whether its hosts are all plain (a hosts list, even empty, without "*"),
    3. how many header names it matches on,
    4. whether its paths are regexes,
    5. its regex_priority (regex routes only),
    6. the byte length of its prefix,
    then the greater (sub-)route UUID (atc-router walks its BTreeMap in reverse).

A route with paths of several kinds counts as one sub-route per group (all regexes; each
prefix length), with Kong's uuid5 ids. Random route sets come from a small vocabulary so they
overlap often; every config goes through the declarative loader.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zonegate.core import config_delta, declarative
from zonegate.core.config import Config
from zonegate.core.pcre import to_python
from zonegate.data_plane.router import compile_router, escape_path, join_upstream_path, normalize_request_path

KONG_SPLIT_NAMESPACE = uuid.UUID("7f145bf9-0dce-4f91-98eb-debbce4b9f6b")

# -- the reference ----------------------------------------------------------------------------------


def sub_routes(route: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    paths = route["paths"]
    if not paths:
        return [(route["id"], None)]
    groups: list[list[str]] = []
    keys: list[object] = []
    for path in paths:
        key = "regex" if path.startswith("~") else len(path.encode())
        if key not in keys:
            keys.append(key)
            groups.append([])
        groups[keys.index(key)].append(path)
    if len(groups) == 1:
        return [(route["id"], paths)]
    return [(str(uuid.uuid5(KONG_SPLIT_NAMESPACE, f"{route['id']}#{i}")), g) for i, g in enumerate(groups, 1)]


def host_matches(entry: str, host: str | None, scheme: str) -> bool:
    if host is None:
        return False
    name, _, port_text = host.lower().partition(":")
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    want, _, want_port = entry.lower().partition(":")
    if want_port and int(want_port) != port:
        return False
    if want.startswith("*"):
        return name.endswith(want[1:])
    if want.endswith("*"):
        return name.startswith(want[:-1])
    return name == want


def sni_matches(entry: str, sni: str) -> bool:
    entry, sni = entry.lower(), sni.lower()
    if entry.endswith("*"):
        return sni.startswith(entry[:-1])
    entry = entry.removesuffix(".") if len(entry) > 1 else entry
    if entry.startswith("*"):
        return sni.endswith(entry[1:])
    return sni == entry


def header_matches(values: list[str], got: str) -> bool:
    got = got.lower()
    for value in values:
        if value.startswith("~*"):
            if re.search(to_python(value[2:].lower()), got):
                return True
        elif value.lower() == got:
            return True
    return False


def path_match(paths: list[str], npath: str) -> tuple[str, re.Match[str] | None] | None:
    for path in paths:
        if path.startswith("~"):
            found = re.search("^" + to_python(path[1:]), npath)
            if found:
                return found.group(0), found
        elif npath.startswith(path):
            return path, None
    return None


def priority(route: dict[str, Any], paths: list[str] | None) -> tuple[int, ...]:
    fields = (route["methods"], route["hosts"], route["headers"], route["snis"], paths)
    hosts = route["hosts"]
    regex = bool(paths) and paths[0].startswith("~")  # type: ignore[index]
    return (
        sum(1 for field in fields if field),
        int(hosts is not None and all("*" not in h for h in hosts)),
        min(len(route["headers"] or {}), 255),
        int(regex),
        route["regex_priority"] if regex else 0,
        0 if regex or not paths else len(paths[0].encode()),
    )


def reference(
    config: Config,
    method: str,
    scheme: str,
    host: str | None,
    path: str,
    headers: dict[str, str],
    sni: str | None,
) -> dict[str, Any] | None:
    services = config.by_id("services")
    npath = normalize_request_path(path)
    candidates = []
    for route in config.of("routes"):
        service = services.get(route["service"]["id"]) if route["service"] else None
        if service is not None and not service["enabled"]:
            continue
        for sub_id, paths in sub_routes(route):
            if route["methods"] and method not in route["methods"]:
                continue
            if route["hosts"] and not any(host_matches(h, host, scheme) for h in route["hosts"]):
                continue
            if (
                route["snis"]
                and scheme == "https"
                and not (sni and any(sni_matches(s, sni) for s in route["snis"]))
            ):
                continue
            # Kong reads a route's header name with "_" as "-" (nginx's header table).
            wanted = {
                name.lower().replace("_", "-"): values for name, values in (route["headers"] or {}).items()
            }
            if not all(
                name in headers and header_matches(values, headers[name]) for name, values in wanted.items()
            ):
                continue
            matched: tuple[str, re.Match[str] | None] | None = ("", None)
            if paths:
                matched = path_match(paths, npath)
                if matched is None:
                    continue
            key = (priority(route, paths), uuid.UUID(sub_id).bytes)
            candidates.append((key, route, service, matched if paths else None))
    if not candidates:
        return None
    _, route, service, matched = max(candidates, key=lambda c: c[0])
    matched_path = matched[0] if matched else None
    upstream = join_upstream_path(
        (service or {}).get("path") or "/",
        npath,
        matched_path if route["strip_path"] else None,
        route["strip_path"],
        "v0",
    )
    https_only = "https" in route["protocols"] and "http" not in route["protocols"]
    captures = {}
    if matched and matched[1] is not None:
        captures = {k: v for k, v in matched[1].groupdict().items() if v is not None}
    return {
        "id": route["id"],
        "upstream_path": escape_path(upstream),
        "matched_path": matched_path,
        "captures": captures,
        "redirect": route["https_redirect_status_code"] if https_only and scheme != "https" else None,
        "upstream_host": host if route["preserve_host"] else None,
    }


# -- random routes and requests ---------------------------------------------------------------------

HOSTS = ["a.com", "b.com", "*.b.com", "a.*", "a.com:8080", "B.com", "x.b.com"]
PATHS = [
    "/",
    "/a",
    "/ab",
    "/a/b",
    "/b",
    "/a/",
    "/b/c",
    r"~/a/(?<n>\d+)",
    "~/b$",
    "~/a",
    "~/(a|b)/c",
    "~/a|/b",
]
HEADERS = {"x-h": [["1"], ["~*^v"], ["1", "2"]], "X_K": [["k"], ["~*K$"]]}
SNIS = ["a.com", "*.b.com", "x.b.com."]


@st.composite
def routes(draw: st.DrawFn, index: int) -> dict[str, Any]:
    protocols = draw(st.sampled_from([["http", "https"], ["https"], ["http"]]))
    route: dict[str, Any] = {
        "name": f"r{index}",
        "protocols": protocols,
        "regex_priority": draw(st.sampled_from([-1, 0, 0, 1, 2])),
        "strip_path": draw(st.booleans()),
        "preserve_host": draw(st.booleans()),
        "https_redirect_status_code": draw(st.sampled_from([426, 301])),
    }
    if draw(st.booleans()):
        route["methods"] = draw(
            st.lists(st.sampled_from(["GET", "POST"]), min_size=1, max_size=2, unique=True)
        )
    if draw(st.booleans()):
        route["hosts"] = draw(st.lists(st.sampled_from(HOSTS), max_size=2, unique=True))
    if draw(st.integers(0, 3)):
        route["paths"] = draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3, unique=True))
    if draw(st.integers(0, 3)) == 0:
        names = draw(st.lists(st.sampled_from(sorted(HEADERS)), min_size=1, max_size=2, unique=True))
        route["headers"] = {name: draw(st.sampled_from(HEADERS[name])) for name in names}
    if "https" in protocols and draw(st.integers(0, 3)) == 0:
        route["snis"] = draw(st.lists(st.sampled_from(SNIS), min_size=1, max_size=2, unique=True))
    if not any(route.get(k) for k in ("methods", "hosts", "paths", "headers", "snis")):
        route["paths"] = ["/"]
    return route


@st.composite
def configs(draw: st.DrawFn) -> Config:
    count = draw(st.integers(1, 8))
    services: list[dict[str, Any]] = [
        {
            "name": f"s{i}",
            "url": "http://backend" + path,
            "enabled": draw(st.integers(0, 5)) > 0,
            "routes": [],
        }
        for i, path in enumerate(draw(st.lists(st.sampled_from(["", "/s", "/s/"]), min_size=1, max_size=3)))
    ]
    for index in range(count):
        service = draw(st.sampled_from(services))
        service["routes"].append(draw(routes(index)))
    return declarative.load({"_format_version": "3.0", "services": services})


REQUEST_PATHS = [
    "/", "/a", "/ab", "/abc", "/a/b", "/a/1", "/a/12/x", "/b", "/b/c", "/a/c", "/x/b",
    "/a//b", "/a/./b", "/x/../a", "/%61b", "/a%2Fb", "/a b", "/c", "/b/",
]  # fmt: skip
REQUEST_HOSTS = [
    "a.com",
    "A.COM",
    "b.com",
    "x.b.com",
    "y.x.b.com",
    "a.org",
    "a.com:8080",
    "a.com:80",
    "b.com:443",
    None,
]

requests = st.tuples(
    st.sampled_from(["GET", "POST", "PUT"]),
    st.sampled_from(["http", "https"]),
    st.sampled_from(REQUEST_HOSTS),
    st.sampled_from(REQUEST_PATHS),
    st.dictionaries(
        st.sampled_from(["x-h", "x-k"]), st.sampled_from(["1", "2", "V2", "k", "zK", "x"]), max_size=2
    ),
    st.sampled_from([None, "a.com", "x.b.com", "A.com"]),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), batch=st.lists(requests, min_size=1, max_size=12))
def test_router_agrees_with_the_reference(config: Config, batch: list[tuple[Any, ...]]) -> None:
    router = compile_router(config, cache_size=0)
    for method, scheme, host, path, headers, sni in batch:
        expected = reference(config, method, scheme, host, path, headers, sni)
        found = router.match(method, scheme, host, path, headers, sni)
        if expected is None:
            assert found is None, (method, scheme, host, path, headers, sni)
            continue
        assert found is not None, (method, scheme, host, path, headers, sni, expected["id"])
        got = {
            "id": found.route["id"],
            "upstream_path": found.upstream_path,
            "matched_path": found.matched_path,
            "captures": dict(found.uri_captures),
            "redirect": found.redirect_status,
            "upstream_host": found.upstream_host,
        }
        assert got == expected, (method, scheme, host, path, headers, sni)
        if found.matched_host is not None:
            assert host_matches(found.matched_host, host, scheme)


@settings(max_examples=100, deadline=None)
@given(config=configs(), batch=st.lists(requests, min_size=1, max_size=6))
def test_the_decision_cache_changes_nothing(config: Config, batch: list[tuple[Any, ...]]) -> None:
    cached, uncached = compile_router(config), compile_router(config, cache_size=0)
    for request in batch + batch:
        assert cached.match(*request) == uncached.match(*request)


@given(st.text(alphabet="/.%2eEfA1b~ ", max_size=16))
def test_normalisation_is_idempotent_without_escapes(path: str) -> None:
    # (with escapes it is not: "%%35%35" decodes to "%55", which decodes again)
    once = normalize_request_path(path.replace("%", ""))
    assert normalize_request_path(once) == once


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain=st.lists(configs(), min_size=2, max_size=4), batch=st.lists(requests, min_size=1, max_size=8))
def test_a_router_compiled_from_the_previous_one_decides_as_a_fresh_one(
    chain: list[Config], batch: list[tuple[Any, ...]]
) -> None:
    # Names give stable ids, so routes and services of each config often share ids with the
    # one before it with other values (moved to another service, other paths...): the reuse of
    # compiled routes and the update of the index in place must notice, step after step.
    previous = compile_router(chain[0], cache_size=0)
    for config in chain[1:]:
        before = [previous.match(*request) for request in batch]
        updated = compile_router(config, cache_size=0, previous=previous)
        fresh = compile_router(config, cache_size=0)
        for request in batch:
            assert updated.match(*request) == fresh.match(*request), request
        # The router it came from still decides as it did (it serves until the swap).
        assert [previous.match(*request) for request in batch] == before
        previous = updated
    again = compile_router(chain[-1], cache_size=0, previous=previous)  # everything reused
    for request in batch:
        assert again.match(*request) == compile_router(chain[-1], cache_size=0).match(*request)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain=st.lists(configs(), min_size=2, max_size=5), batch=st.lists(requests, min_size=1, max_size=8))
def test_a_router_compiled_from_a_delta_decides_as_a_fresh_one(
    chain: list[Config], batch: list[tuple[Any, ...]]
) -> None:
    # As a data plane applies a delta snapshot: the new config shares every unchanged entity
    # with the one before, and the router looks only at the routes the delta (or a service in
    # it) touches. Services come and go, get disabled, and routes move between them.
    config = chain[0]
    previous = compile_router(config, cache_size=0)
    for target in chain[1:]:
        before = [previous.match(*request) for request in batch]
        delta = config_delta.diff(config, target)
        config = config_delta.apply(config, delta)
        updated = compile_router(config, cache_size=0, previous=previous, change=delta)
        fresh = compile_router(config, cache_size=0)
        for request in batch:
            assert updated.match(*request) == fresh.match(*request), request
        assert len(updated) == len(fresh)
        assert updated.needs_headers == fresh.needs_headers
        assert sorted(updated.rejected) == sorted(fresh.rejected)
        assert [previous.match(*request) for request in batch] == before
        previous = updated
