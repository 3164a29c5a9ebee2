"""The router, rule by rule, against Kong's traditional_compatible behaviour.

Every config goes through the declarative loader, so each route here is a route Kong accepts.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from zonegate.core import declarative
from zonegate.data_plane.router import SPLIT_NAMESPACE, Match, Router, compile_router, split_paths


def router_for(*routes: dict[str, Any], service: dict[str, Any] | None = None, **options: Any) -> Router:
    """One service (url http://backend/s unless given) holding ``routes``, named r0, r1, ..."""
    named = [{"name": f"r{i}", **route} for i, route in enumerate(routes)]
    svc = {"name": "svc", "url": "http://backend:8080/s", **(service or {}), "routes": named}
    config = declarative.load({"_format_version": "3.0", "services": [svc]})
    return compile_router(config, **options)


def routed(
    router: Router,
    path: str = "/",
    *,
    method: str = "GET",
    scheme: str = "http",
    host: str | None = "example.com",
    headers: dict[str, str] | None = None,
    sni: str | None = None,
) -> str | None:
    """The name of the route that wins, or None."""
    found = router.match(method, scheme, host, path, headers, sni)
    return None if found is None else found.route["name"]


# -- protocols ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [426, 301, 302, 307, 308])
def test_https_only_route_answers_plain_http_with_its_redirect_status(status: int) -> None:
    router = router_for({"paths": ["/a"], "protocols": ["https"], "https_redirect_status_code": status})
    plain = router.match("GET", "http", "example.com", "/a")
    assert plain is not None and plain.redirect_status == status
    secure = router.match("GET", "https", "example.com", "/a")
    assert secure is not None and secure.redirect_status is None


def test_routes_for_both_protocols_never_redirect() -> None:
    router = router_for({"paths": ["/a"]})
    for scheme in ("http", "https"):
        found = router.match("GET", scheme, "example.com", "/a")
        assert found is not None and found.redirect_status is None


def test_protocols_are_not_matched_an_http_only_route_serves_https_too() -> None:
    # Kong's expression for an http route has no net.protocol test (transform.lua).
    router = router_for({"paths": ["/a"], "protocols": ["http"]})
    found = router.match("GET", "https", "example.com", "/a")
    assert found is not None and found.redirect_status is None


def test_an_https_only_route_shadows_a_weaker_http_route() -> None:
    router = router_for(
        {"paths": ["/a"], "hosts": ["example.com"], "protocols": ["https"]},
        {"paths": ["/a"], "protocols": ["http"]},
    )
    found = router.match("GET", "http", "example.com", "/a")
    assert found is not None and found.route["name"] == "r0" and found.redirect_status == 426


def test_stream_routes_are_not_http_routes() -> None:
    config = declarative.load(
        {
            "_format_version": "3.0",
            "services": [
                {
                    "name": "tcp",
                    "url": "tcp://backend:9000",
                    "routes": [{"name": "t", "protocols": ["tcp"], "destinations": [{"port": 9000}]}],
                },
                {
                    "name": "web",
                    "url": "http://backend",
                    "routes": [{"name": "g", "protocols": ["grpc"], "paths": ["/g"]}],
                },
            ],
        }
    )
    router = compile_router(config)
    assert len(router) == 1
    assert routed(router, "/g") == "g"


# -- methods -----------------------------------------------------------------------------------


def test_methods_compare_exactly() -> None:
    router = router_for({"paths": ["/"], "methods": ["GET", "POST"]})
    assert routed(router, "/x", method="GET") == "r0"
    assert routed(router, "/x", method="POST") == "r0"
    assert routed(router, "/x", method="PUT") is None
    assert routed(router, "/x", method="get") is None


# -- hosts -------------------------------------------------------------------------------------


def test_hosts_compare_case_insensitively_and_ignore_the_request_port_without_a_route_port() -> None:
    router = router_for({"hosts": ["Example.COM"]})
    assert routed(router, host="example.com") == "r0"
    assert routed(router, host="EXAMPLE.com:8443") == "r0"
    assert routed(router, host="other.com") is None
    assert routed(router, host=None) is None


def test_a_host_with_a_port_needs_that_port_and_a_bare_host_is_on_the_default_port() -> None:
    router = router_for({"hosts": ["example.com:8080"]}, {"hosts": ["example.com:443"]})
    assert routed(router, host="example.com:8080") == "r0"
    assert routed(router, host="example.com:8081") is None
    assert routed(router, host="example.com") is None  # port 80 on http
    assert routed(router, host="example.com", scheme="https") == "r1"
    assert routed(router, host="example.com:443") == "r1"


def test_wildcard_hosts() -> None:
    router = router_for({"hosts": ["*.example.com"]}, {"hosts": ["api.*"]}, {"hosts": ["*.example.org:8080"]})
    assert routed(router, host="a.example.com") == "r0"
    assert routed(router, host="a.b.example.com") == "r0"  # a suffix, any number of labels
    assert routed(router, host="example.com") is None
    assert routed(router, host="api.example.net") == "r1"
    assert routed(router, host="api.co.uk:9000") == "r1"
    assert routed(router, host="apix.com") is None
    assert routed(router, host="a.example.org:8080") == "r2"
    assert routed(router, host="a.example.org") is None


def test_matched_host_is_the_route_entry_as_written() -> None:
    router = router_for({"hosts": ["plain.com", "*.Wild.com"]})
    found = router.match("GET", "http", "x.wild.com", "/")
    assert found is not None and found.matched_host == "*.Wild.com"
    found = router.match("GET", "http", "plain.com:80", "/")
    assert found is not None and found.matched_host == "plain.com"
    hostless = router_for({"paths": ["/"]}).match("GET", "http", "x", "/")
    assert hostless is not None and hostless.matched_host is None


def test_ipv6_hosts() -> None:
    router = router_for({"hosts": ["[::1]:8000"]}, {"hosts": ["[::2]"]})
    assert routed(router, host="[::1]:8000") == "r0"
    assert routed(router, host="[::1]") is None
    assert routed(router, host="[::2]:9") == "r1"


# -- paths -------------------------------------------------------------------------------------


def test_a_prefix_is_a_string_prefix_and_the_longest_wins() -> None:
    router = router_for({"paths": ["/foo"]}, {"paths": ["/foo/bar"]}, {"paths": ["/"]})
    assert routed(router, "/foobar") == "r0"
    assert routed(router, "/foo/bar/baz") == "r1"
    assert routed(router, "/foo/ba") == "r0"
    assert routed(router, "/other") == "r2"


def test_paths_match_the_normalised_request_path() -> None:
    router = router_for({"paths": ["/b"]}, {"paths": ["/a b"]}, {"paths": ["/x%2Fy"]})
    assert routed(router, "/a/../b") == "r0"
    assert routed(router, "/%62/c") == "r0"
    assert routed(router, "//b") == "r0"
    assert routed(router, "/a%20b") == "r1"
    assert routed(router, "/x%2fy") == "r2"  # a reserved escape is not decoded, only upper-cased
    assert routed(router, "/x/y") is None


def test_non_ascii_prefixes_match_their_utf8_escapes() -> None:
    router = router_for({"paths": ["/caf\u00e9"]})
    found = router.match("GET", "http", "h", "/caf%C3%A9/menu")
    assert found is not None and found.upstream_path == "/s/menu"
    assert found.matched_path == "/caf\u00c3\u00a9"  # bytes as chars, like the proxy's strings


def test_regex_paths_are_anchored_at_the_start_and_capture() -> None:
    router = router_for({"paths": [r"~/users/(?<id>\d+)/(\w+)?"]})
    found = router.match("GET", "http", "h", "/users/42/")
    assert found is not None
    assert found.uri_captures == {"id": "42"}
    assert found.uri_groups == ("42", "")  # the optional group took no part
    assert found.matched_path == "/users/42/"
    assert routed(router, "/v1/users/42") is None


def test_a_regex_alternative_escapes_kongs_anchor() -> None:
    # Kong glues "^" to the regex text: "^/a|/b" finds "/b" anywhere.
    router = router_for({"paths": ["~/a|/b"]})
    assert routed(router, "/x/b") == "r0"
    assert routed(router, "/x/a") is None


def test_strip_path_strips_what_a_regex_matched() -> None:
    router = router_for({"paths": [r"~/users/(?<id>\d+)"]})
    found = router.match("GET", "http", "h", "/users/42/items")
    assert found is not None and found.upstream_path == "/s/items"


def test_the_first_regex_of_a_route_supplies_the_captures() -> None:
    router = router_for({"paths": [r"~/(?<first>a)", r"~/(?<second>a)b"]})
    found = router.match("GET", "http", "h", "/ab")
    assert found is not None and found.uri_captures == {"first": "a"}


# -- headers -----------------------------------------------------------------------------------


def test_header_values_compare_case_insensitively() -> None:
    router = router_for({"headers": {"X-Version": ["V1", "v2"]}})
    assert routed(router, headers={"x-version": "v1"}) == "r0"
    assert routed(router, headers={"x-version": "V2"}) == "r0"
    assert routed(router, headers={"x-version": "v3"}) is None
    assert routed(router, headers={}) is None
    assert routed(router) is None
    assert router.needs_headers == frozenset({"x-version"})


def test_header_regexes_search_the_lowercased_value() -> None:
    router = router_for({"headers": {"x-agent": ["~*Mobile"]}})
    assert routed(router, headers={"x-agent": "Foo MOBILE/1.0"}) == "r0"
    assert routed(router, headers={"x-agent": "desktop"}) is None


def test_header_regex_text_is_lowercased_as_kong_does() -> None:
    # Kong lower-cases the whole value, so "\D" (not a digit) becomes "\d" (a digit).
    router = router_for({"headers": {"x-n": [r"~*^\D+$"]}})
    assert routed(router, headers={"x-n": "123"}) == "r0"
    assert routed(router, headers={"x-n": "abc"}) is None


def test_header_names_read_underscores_as_dashes() -> None:
    router = router_for({"headers": {"X_Tenant": ["a"]}})
    assert router.needs_headers == frozenset({"x-tenant"})
    assert routed(router, headers={"x-tenant": "A"}) == "r0"


def test_a_header_regex_that_does_not_compile_leaves_the_route_out() -> None:
    router = router_for({"headers": {"x-a": ["~*(unclosed"]}}, {"paths": ["/"]})
    assert len(router) == 1
    assert [reason.split(":")[0] for _, reason in router.rejected] == ["invalid regex"]
    assert routed(router, headers={"x-a": "(unclosed"}) == "r1"


# -- snis --------------------------------------------------------------------------------------


def test_snis_constrain_https_requests_only() -> None:
    router = router_for({"paths": ["/"], "snis": ["api.example.com."], "protocols": ["https"]})
    assert routed(router, scheme="https", sni="api.example.com") == "r0"
    assert routed(router, scheme="https", sni="API.example.com") == "r0"
    assert routed(router, scheme="https", sni="other.com") is None
    assert routed(router, scheme="https", sni=None) is None
    plain = router.match("GET", "http", "h", "/", None, None)
    assert plain is not None and plain.redirect_status == 426


def test_wildcard_snis() -> None:
    router = router_for({"snis": ["*.example.com"]}, {"snis": ["internal.*"]})
    assert routed(router, scheme="https", sni="a.b.example.com") == "r0"
    assert routed(router, scheme="https", sni="internal.net") == "r1"
    assert routed(router, scheme="https", sni="example.com") is None


# -- strip_path, path_handling, service path, preserve_host --------------------------------------


def test_upstream_path_joins_service_path_and_request_path() -> None:
    router = router_for({"paths": ["/api"]}, {"paths": ["/keep"], "strip_path": False})
    assert router.match("GET", "http", "h", "/api/users").upstream_path == "/s/users"  # type: ignore[union-attr]
    assert router.match("GET", "http", "h", "/api").upstream_path == "/s"  # type: ignore[union-attr]
    assert router.match("GET", "http", "h", "/keep/x").upstream_path == "/s/keep/x"  # type: ignore[union-attr]


def test_upstream_path_is_built_from_the_normalised_path_and_escaped() -> None:
    router = router_for({"paths": ["/api"]})
    found = router.match("GET", "http", "h", "/api/a/../b%20c/%7e")
    assert found is not None and found.upstream_path == "/s/b%20c/~"


def test_path_handling_v1_is_ignored_unless_asked_for() -> None:
    route = {"paths": ["/fv1"], "strip_path": False, "path_handling": "v1"}
    kong = router_for(route).match("GET", "http", "h", "/fv1/req")
    assert kong is not None and kong.upstream_path == "/s/fv1/req"
    traditional = router_for(route, honor_path_handling=True).match("GET", "http", "h", "/fv1/req")
    assert traditional is not None and traditional.upstream_path == "/sfv1/req"


def test_preserve_host_passes_the_clients_host_header() -> None:
    router = router_for({"paths": ["/a"], "preserve_host": True}, {"paths": ["/b"]})
    kept = router.match("GET", "http", "Example.com:8000", "/a")
    assert kept is not None and kept.upstream_host == "Example.com:8000"
    dropped = router.match("GET", "http", "Example.com:8000", "/b")
    assert dropped is not None and dropped.upstream_host is None


def test_routes_of_disabled_services_are_left_out() -> None:
    config = declarative.load(
        {
            "_format_version": "3.0",
            "services": [
                {
                    "name": "off",
                    "url": "http://a",
                    "enabled": False,
                    "routes": [{"name": "x", "paths": ["/x"]}],
                },
                {"name": "on", "url": "http://b", "routes": [{"name": "y", "paths": ["/"]}]},
            ],
        }
    )
    router = compile_router(config)
    assert len(router) == 1
    assert routed(router, "/x") == "y"


def test_a_route_without_service_still_matches() -> None:
    config = declarative.load({"_format_version": "3.0", "routes": [{"name": "lonely", "paths": ["/l"]}]})
    found = compile_router(config).match("GET", "http", "h", "/l/x")
    assert found is not None and found.service is None and found.upstream_path == "/x"


# -- priorities between overlapping routes --------------------------------------------------------


def test_more_matching_fields_win() -> None:
    router = router_for({"paths": ["/a/very/long/prefix"]}, {"paths": ["/a"], "methods": ["GET"]})
    assert routed(router, "/a/very/long/prefix/x") == "r1"
    assert routed(router, "/a/very/long/prefix/x", method="POST") == "r0"


def test_snis_add_weight_even_when_not_checked() -> None:
    router = router_for({"paths": ["/a"], "snis": ["x.com"]}, {"paths": ["/a/b"]})
    assert routed(router, "/a/b") == "r0"  # http: the sni is not checked, but it weighs


def test_plain_hosts_beat_wildcard_hosts() -> None:
    router = router_for(
        {"hosts": ["*.example.com"], "paths": ["/long/prefix"]},
        {"hosts": ["api.example.com"], "paths": ["/"]},
    )
    assert routed(router, "/long/prefix", host="api.example.com") == "r1"
    assert routed(router, "/long/prefix", host="web.example.com") == "r0"


def test_an_empty_hosts_list_counts_as_plain_hosts() -> None:
    # transform.lua tests type(hosts) == "table": [] sets the plain-host bit without weighing.
    router = router_for({"paths": ["/a"], "hosts": []}, {"paths": ["/a/b/c"]})
    assert routed(router, "/a/b/c") == "r0"


def test_more_headers_win() -> None:
    router = router_for(
        {"headers": {"x-a": ["1"]}, "paths": ["/long/prefix"]},
        {"headers": {"x-a": ["1"], "x-b": ["2"]}, "paths": ["/"]},
    )
    assert routed(router, "/long/prefix", headers={"x-a": "1", "x-b": "2"}) == "r1"
    assert routed(router, "/long/prefix", headers={"x-a": "1"}) == "r0"


def test_regex_paths_beat_prefixes_and_order_by_regex_priority() -> None:
    router = router_for(
        {"paths": ["/users/42/very/long"]},
        {"paths": [r"~/users/\d+"], "regex_priority": 1},
        {"paths": [r"~/users/4"], "regex_priority": 2},
        {"paths": [r"~/users/42/v"], "regex_priority": -1},
    )
    assert routed(router, "/users/42/very/long") == "r2"
    assert routed(router, "/users/5") == "r1"
    assert routed(router, "/users/X/very") is None


def test_regex_priority_does_not_count_for_prefix_paths() -> None:
    router = router_for({"paths": ["/a"], "regex_priority": 100}, {"paths": ["/a/b"]})
    assert routed(router, "/a/b") == "r1"


def test_a_prefix_route_with_more_fields_beats_a_regex() -> None:
    router = router_for({"paths": [r"~/a"], "regex_priority": 10}, {"paths": ["/a"], "hosts": ["h"]})
    assert routed(router, "/a", host="h") == "r1"


def test_each_path_of_a_route_competes_with_its_own_length() -> None:
    # The route is split: its "/a" does not borrow the rank of its "/abc/def".
    router = router_for({"paths": ["/a", "/abc/def"]}, {"paths": ["/abc"]})
    assert routed(router, "/abc/x") == "r1"
    assert routed(router, "/abc/def/x") == "r0"
    assert routed(router, "/ax") == "r0"


def test_equal_priorities_go_to_the_greater_route_id() -> None:
    low, high = "00000000-0000-4000-8000-000000000001", "ffffffff-0000-4000-8000-000000000001"
    for first, second in ((low, high), (high, low)):
        router = router_for({"id": first, "paths": ["/a"]}, {"id": second, "paths": ["/a"]})
        found = router.match("GET", "http", "h", "/a")
        assert found is not None and found.route["id"] == high


def test_split_routes_take_kongs_uuid5_ids() -> None:
    route = {"id": "5e0a9ab5-35a1-4b34-9e45-1a5b6d1f8f5e", "paths": ["/a", "~/b", "/cd", "~/e"]}
    expected = [
        (str(uuid.uuid5(SPLIT_NAMESPACE, f"{route['id']}#{index}")), paths)
        for index, paths in ((1, ["/a"]), (2, ["~/b", "~/e"]), (3, ["/cd"]))
    ]
    assert split_paths(route) == expected
    assert split_paths({"id": "x", "paths": ["/ab", "/cd"]}) == [("x", ["/ab", "/cd"])]


# -- the result object ---------------------------------------------------------------------------


def test_match_is_immutable_and_equal_to_a_directly_built_one() -> None:
    router = router_for({"paths": ["/a"]})
    found = router.match("GET", "http", "h", "/a/b")
    assert type(found) is Match
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.upstream_path = "/x"  # type: ignore[misc]
    assert found == Match(**{f.name: getattr(found, f.name) for f in dataclasses.fields(Match)})


def test_identical_requests_share_a_cached_decision() -> None:
    cached = router_for({"paths": ["/a"]})
    first = cached.match("GET", "http", "h", "/a")
    assert first is not None and cached.match("GET", "http", "h", "/a") is first
    assert cached.match("GET", "http", "h", "/zz") is None
    assert cached.match("GET", "http", "h", "/zz") is None
    uncached = router_for({"paths": ["/a"]}, cache_size=0)
    one, two = uncached.match("GET", "http", "h", "/a"), uncached.match("GET", "http", "h", "/a")
    assert one == two and one is not two


def test_the_decision_cache_stays_bounded() -> None:
    router = router_for({"paths": ["/"]}, cache_size=3)
    for i in range(10):
        assert routed(router, f"/{i}") == "r0"
    assert len(router._match_memo or {}) <= 3
