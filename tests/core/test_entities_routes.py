"""Routes: matcher rules per protocol family, forbidden fields, hosts/paths/headers rules.

Kong 3.x (traditional_compatible): ``kong/db/schema/entities/routes.lua`` and
``routes_subschemas.lua`` (the sub-schema is picked by the first protocol), element rules from
``typedefs.lua`` (hosts, router_path, headers, sources/destinations).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from zonegate.core import pcre

from .entity_helpers import kong_body, validate, violation

SNIS_ONLY_WITH = "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'"
HTTPS_MATCHERS = "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'"
HTTP_MATCHERS = "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
STREAM_MATCHERS = (
    "must set one of 'sources', 'destinations', 'snis' when 'protocols' is 'tcp', 'tls' or 'udp'"
)
STREAM_FORBIDS = "when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'"


# -- at least one matcher -------------------------------------------------------------------------


def test_no_matcher_with_default_protocols_names_snis_too() -> None:
    body = violation("routes", {})
    assert body == kong_body(f"schema violation ({HTTPS_MATCHERS})", {"@entity": [HTTPS_MATCHERS]})


def test_no_matcher_with_http_only() -> None:
    body = violation("routes", {"protocols": ["http"]})
    assert body == kong_body(f"schema violation ({HTTP_MATCHERS})", {"@entity": [HTTP_MATCHERS]})


@pytest.mark.parametrize(
    "matcher",
    [
        {"methods": ["GET"]},
        {"hosts": ["example.com"]},
        {"headers": {"x-version": ["1"]}},
        {"paths": ["/"]},
    ],
)
def test_any_one_http_matcher_is_enough(matcher: dict[str, Any]) -> None:
    result = validate("routes", {"protocols": ["http"], **matcher})
    (name, value), *_ = matcher.items()
    assert result[name] == value


def test_snis_alone_is_enough_for_https() -> None:
    result = validate("routes", {"protocols": ["https"], "snis": ["example.com"]})
    assert result["snis"] == ["example.com"]


@pytest.mark.parametrize(
    ("protocols", "message"),
    [
        (["grpc"], "must set one of 'hosts', 'headers', 'paths' when 'protocols' is 'grpc'"),
        (["grpcs"], "must set one of 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'grpcs'"),
    ],
)
def test_no_matcher_with_grpc(protocols: list[str], message: str) -> None:
    body = violation("routes", {"protocols": protocols})
    assert body == kong_body(f"schema violation ({message})", {"@entity": [message]})


# -- snis and protocol sets -----------------------------------------------------------------------


def test_snis_with_http_only() -> None:
    body = violation("routes", {"protocols": ["http"], "snis": ["example.com"], "paths": ["/"]})
    assert body == kong_body(
        f"2 schema violations ({SNIS_ONLY_WITH}; snis: length must be 0)",
        {"@entity": [SNIS_ONLY_WITH], "snis": "length must be 0"},
    )


def test_snis_with_http_only_and_no_other_matcher() -> None:
    # snis do not count as a matcher for plain http, so both entity errors appear.
    body = violation("routes", {"protocols": ["http"], "snis": ["example.com"]})
    assert body == kong_body(
        f"3 schema violations ({SNIS_ONLY_WITH}; {HTTP_MATCHERS}; snis: length must be 0)",
        {"@entity": [SNIS_ONLY_WITH, HTTP_MATCHERS], "snis": "length must be 0"},
    )


def test_mutually_exclusive_protocols_name_the_sets_in_use() -> None:
    # Kong's mutually_exclusive_subsets lists the subsets the value's members belong to, in the
    # order they are first met, not every subset the schema declares.
    body = violation("routes", {"protocols": ["http", "tcp"], "paths": ["/"]})
    message = "these sets are mutually exclusive: ('http', 'https'), ('tcp', 'tls', 'udp')"
    assert body == kong_body(f"schema violation (protocols: {message})", {"protocols": message})


def test_mutually_exclusive_protocols_follow_the_order_of_the_value() -> None:
    body = violation("routes", {"protocols": ["grpc", "https"], "paths": ["/"]})
    message = "these sets are mutually exclusive: ('grpc', 'grpcs'), ('http', 'https')"
    assert body == kong_body(f"schema violation (protocols: {message})", {"protocols": message})


def test_protocols_within_one_set_are_fine() -> None:
    result = validate("routes", {"protocols": ["tcp", "tls", "udp"], "sources": [{"ip": "10.0.0.0/8"}]})
    assert result["protocols"] == ["tcp", "tls", "udp"]


def test_protocols_may_not_be_empty() -> None:
    body = violation("routes", {"protocols": [], "paths": ["/"]})
    assert body == kong_body(
        "schema violation (protocols: length must be at least 1)", {"protocols": "length must be at least 1"}
    )


# -- stream routes --------------------------------------------------------------------------------


def test_stream_route_refuses_http_matchers() -> None:
    body = violation("routes", {"protocols": ["tcp"], "paths": ["/"], "methods": ["GET"]})
    assert body == kong_body(
        f"3 schema violations ({STREAM_MATCHERS}; "
        f"methods: cannot set 'methods' {STREAM_FORBIDS}; paths: cannot set 'paths' {STREAM_FORBIDS})",
        {
            "@entity": [STREAM_MATCHERS],
            "methods": f"cannot set 'methods' {STREAM_FORBIDS}",
            "paths": f"cannot set 'paths' {STREAM_FORBIDS}",
        },
    )


def test_stream_route_refuses_hosts_and_headers() -> None:
    data = {"protocols": ["tls"], "hosts": ["a.example"], "headers": {"x-a": ["1"]}, "snis": ["a.example"]}
    body = violation("routes", data)
    assert body == kong_body(
        f"2 schema violations (headers: cannot set 'headers' {STREAM_FORBIDS}; "
        f"hosts: cannot set 'hosts' {STREAM_FORBIDS})",
        {
            "headers": f"cannot set 'headers' {STREAM_FORBIDS}",
            "hosts": f"cannot set 'hosts' {STREAM_FORBIDS}",
        },
    )


@pytest.mark.parametrize("protocols", [["tcp"], ["udp"], ["tls"]])
def test_stream_route_needs_sources_destinations_or_snis(protocols: list[str]) -> None:
    body = violation("routes", {"protocols": protocols})
    assert body == kong_body(f"schema violation ({STREAM_MATCHERS})", {"@entity": [STREAM_MATCHERS]})


@pytest.mark.parametrize(
    "matcher",
    [{"sources": [{"ip": "10.0.0.1"}]}, {"destinations": [{"port": 5432}]}],
)
def test_stream_route_with_an_endpoint_matcher(matcher: dict[str, Any]) -> None:
    result = validate("routes", {"protocols": ["tcp"], **matcher})
    (name, [endpoint]), *_ = matcher.items()
    assert result[name] == [{"ip": None, "port": None, **endpoint}]


def test_stream_endpoint_needs_ip_or_port() -> None:
    # typedefs.sources: each element is a record with at_least_one_of = { "ip", "port" }.
    body = violation("routes", {"protocols": ["tcp"], "sources": [{}]})
    assert body["fields"] == {
        "sources": [{"@entity": ["at least one of these fields must be non-empty: 'ip', 'port'"]}]
    }


def test_tls_passthrough_needs_snis() -> None:
    message = "must set snis when 'protocols' is 'tls_passthrough'"
    body = violation("routes", {"protocols": ["tls_passthrough"], "sources": [{"ip": "10.0.0.1"}]})
    assert body == kong_body(f"schema violation ({message})", {"@entity": [message]})


def test_tls_passthrough_with_snis() -> None:
    result = validate("routes", {"protocols": ["tls_passthrough"], "snis": ["db.example"]})
    assert (result["protocols"], result["snis"]) == (["tls_passthrough"], ["db.example"])


@pytest.mark.parametrize(
    ("protocols", "family"),
    [(["http"], "'http' or 'https'"), (["grpc"], "'grpc' or 'grpcs'")],
)
@pytest.mark.parametrize("field", ["sources", "destinations"])
def test_endpoints_are_stream_only(protocols: list[str], family: str, field: str) -> None:
    body = violation("routes", {"protocols": protocols, "paths": ["/"], field: [{"ip": "10.0.0.1"}]})
    message = f"cannot set '{field}' when 'protocols' is {family}"
    assert body == kong_body(f"schema violation ({field}: {message})", {field: message})


# -- grpc routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "grpcs"])
def test_grpc_route_refuses_methods(protocol: str) -> None:
    body = violation("routes", {"protocols": [protocol], "paths": ["/"], "methods": ["POST"]})
    message = "cannot set 'methods' when 'protocols' is 'grpc' or 'grpcs'"
    assert body == kong_body(f"schema violation (methods: {message})", {"methods": message})


@pytest.mark.parametrize("protocol", ["grpc", "grpcs"])
def test_grpc_route_refuses_strip_path_true(protocol: str) -> None:
    body = violation("routes", {"protocols": [protocol], "paths": ["/"], "strip_path": True})
    message = "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'"
    assert body == kong_body(f"schema violation (strip_path: {message})", {"strip_path": message})


# -- headers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Host", "host", "HOST"])
def test_headers_refuse_a_host_key(name: str) -> None:
    # Kong's map validation returns the first key error as the field's error (a string),
    # not a table keyed by header name.
    message = "cannot contain 'host' header, which must be specified in the 'hosts' attribute"
    body = violation("routes", {"headers": {name: ["example.com"]}})
    assert body == kong_body(f"schema violation (headers: {message})", {"headers": message})


def test_headers_must_be_a_map() -> None:
    body = violation("routes", {"headers": ["x-a"]})
    assert body == kong_body("schema violation (headers: expected a map)", {"headers": "expected a map"})


def test_headers_with_regex_values_are_kept() -> None:
    headers = {"x-version": ["v1", "~*v[23]"]}
    assert validate("routes", {"headers": headers})["headers"] == headers


# -- hosts ----------------------------------------------------------------------------------------


def test_hosts_wildcard_rules() -> None:
    body = violation("routes", {"hosts": ["*.example.*", "api.*.example.com"]})
    assert body == kong_body(
        "2 schema violations (hosts.1: invalid wildcard: must have at most one wildcard; "
        "hosts.2: invalid wildcard: must be placed at leftmost or rightmost label)",
        {
            "hosts": [
                "invalid wildcard: must have at most one wildcard",
                "invalid wildcard: must be placed at leftmost or rightmost label",
            ]
        },
    )


def test_hosts_element_errors_are_numbered_from_one_with_holes() -> None:
    body = violation("routes", {"hosts": ["ok.example", "a.*.b"]})
    assert body == kong_body(
        "schema violation (hosts.2: invalid wildcard: must be placed at leftmost or rightmost label)",
        {"hosts": [None, "invalid wildcard: must be placed at leftmost or rightmost label"]},
    )


@pytest.mark.parametrize("host", ["*.example.com", "example.*", "example.com:8080", "10.0.0.1"])
def test_hosts_accepted(host: str) -> None:
    assert validate("routes", {"hosts": [host]})["hosts"] == [host]


def test_hosts_bad_hostname_message() -> None:
    # validate_host_with_wildcards -> utils.normalize_ip -> check_hostname's own error.
    body = violation("routes", {"hosts": ["bad host.example"]})
    assert body == kong_body(
        "schema violation (hosts.1: invalid hostname: bad host.example)",
        {"hosts": ["invalid hostname: bad host.example"]},
    )


# -- paths ----------------------------------------------------------------------------------------


def test_non_normalized_path() -> None:
    body = violation("routes", {"paths": ["/foo/../bar"]})
    assert body == kong_body(
        "schema violation (paths.1: non-normalized path, consider use '/bar' instead)",
        {"paths": ["non-normalized path, consider use '/bar' instead"]},
    )


def test_percent_encoded_unreserved_character_is_not_normalized() -> None:
    body = violation("routes", {"paths": ["/%7Euser"]})
    assert body["fields"] == {"paths": ["non-normalized path, consider use '/~user' instead"]}


def test_bad_regex_path() -> None:
    pattern = "/users/(?<id>\\d+"
    with pytest.raises(re.error) as python_error:
        re.compile(pcre.to_python(pattern))
    message = f"invalid regex: '{pattern}' (PCRE returned: {python_error.value})"
    body = violation("routes", {"paths": ["~" + pattern]})
    assert body == kong_body(f"schema violation (paths.1: {message})", {"paths": [message]})


def test_pcre_named_groups_are_accepted() -> None:
    path = "~/users/(?<id>\\d+)/(?'tab'\\w+)$"
    assert validate("routes", {"paths": [path]})["paths"] == [path]


@pytest.mark.parametrize("path", ["users", "~users"])
def test_path_must_start_with_slash_or_tilde_slash(path: str) -> None:
    message = "should start with: / (fixed path) or ~/ (regex path)"
    body = violation("routes", {"paths": [path]})
    assert body == kong_body(f"schema violation (paths.1: {message})", {"paths": [message]})


def test_empty_segments_are_checked_before_the_prefix() -> None:
    # Kong's validators_order runs match_none ("//") before match_any (the prefixes).
    body = violation("routes", {"paths": ["users//list"]})
    assert body == kong_body(
        "schema violation (paths.1: must not have empty segments)",
        {"paths": ["must not have empty segments"]},
    )


def test_bad_percent_escape_in_a_prefix_path() -> None:
    body = violation("routes", {"paths": ["/a%zz"]})
    assert body == kong_body(
        "schema violation (paths.1: invalid url-encoded value: '%zz')",
        {"paths": ["invalid url-encoded value: '%zz'"]},
    )


@pytest.mark.parametrize("path", ["/café", "/a b"])
def test_prefix_path_outside_rfc3986_is_only_checked_for_normal_form(path: str) -> None:
    # validate_path_with_regexes drops validate_path's "rfc3986" error and keeps only the
    # "percent" one; a prefix path that is already normalized is accepted.
    assert validate("routes", {"paths": [path]})["paths"] == [path]


def test_regex_path_is_not_checked_for_percent_escapes() -> None:
    # For "~..." validate_path fails on its first character (rfc3986), so the percent check
    # never runs; only the regex itself is checked.
    assert validate("routes", {"paths": ["~/a%zz"]})["paths"] == ["~/a%zz"]


# -- misc fields ----------------------------------------------------------------------------------


def test_https_redirect_status_code_one_of() -> None:
    body = violation("routes", {"paths": ["/"], "https_redirect_status_code": 303})
    message = "expected one of: 426, 301, 302, 307, 308"
    assert body == kong_body(
        f"schema violation (https_redirect_status_code: {message})", {"https_redirect_status_code": message}
    )


def test_path_handling_one_of() -> None:
    body = violation("routes", {"paths": ["/"], "path_handling": "v2"})
    assert body == kong_body(
        "schema violation (path_handling: expected one of: v0, v1)",
        {"path_handling": "expected one of: v0, v1"},
    )


def test_route_name_utf8_rule() -> None:
    message = (
        "invalid value 'my route': the only accepted ascii characters are alphanumerics or ., -, _, and ~"
    )
    body = violation("routes", {"paths": ["/"], "name": "my route"})
    assert body == kong_body(f"schema violation (name: {message})", {"name": message})


def test_route_name_accepts_utf8() -> None:
    assert validate("routes", {"paths": ["/"], "name": "café-route_1.v~2"})["name"] == "café-route_1.v~2"
