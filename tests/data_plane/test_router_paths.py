"""Path handling of the router: Kong's request path normalisation, escaping, and path joining."""

from __future__ import annotations

import pytest

from zonegate.data_plane.router import escape_path, join_upstream_path, normalize_request_path

# -- normalisation (kong/tools/uri.lua, cases from Kong's spec/01-unit/01-tools_spec.lua) ----------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("", ""),
        ("/", "/"),
        ("/a/b/c/", "/a/b/c/"),
        # reserved characters stay escaped, upper-cased
        ("/a%2fb%2Fc/", "/a%2Fb%2Fc/"),
        (
            "/%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D",
            "/%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D",
        ),
        # unreserved and "other" characters are decoded (Kong 3.0, PR #8140)
        ("/f%6f%6f", "/foo"),
        ("/%6B%6f%6e%67", "/kong"),
        ("/a%20b", "/a b"),
        ("/caf%C3%A9", "/caf\u00c3\u00a9"),  # bytes, one char per byte
        # dot segments, including escaped ones
        ("/%2E", "/"),
        ("/./", "/"),
        ("/.", "/"),
        ("/..", "/"),
        ("/../", "/"),
        ("/./.././../", "/"),
        ("/a/b/c/./../../g", "/a/g"),
        ("/a/%2e%2E/b", "/b"),
        ("mid/content=5/../6", "mid/6"),
        ("/a/.hidden/./x", "/a/.hidden/x"),
        # slashes merged
        ("//", "/"),
        ("/////", "/"),
        ("/a//b//", "/a/b/"),
        ("//a/..//b", "/b"),
    ],
)
def test_normalize_request_path(raw: str, normal: str) -> None:
    assert normalize_request_path(raw) == normal


def test_normalisation_is_idempotent_on_examples() -> None:
    for raw in ("/a/%2e%2E/b", "/a//b//", "/x%2F/../y", "/%41%2f%42"):
        once = normalize_request_path(raw)
        assert normalize_request_path(once) == once


@pytest.mark.parametrize(
    ("path", "escaped"),
    [
        ("/plain/path-_.~", "/plain/path-_.~"),
        ("/a%2Fb", "/a%2Fb"),  # escapes already on the wire stay as they are
        ("/a b", "/a%20b"),
        ('/q"<>{}|\\^`', "/q%22%3C%3E%7B%7D%7C%5C%5E%60"),
        ("/caf\u00c3\u00a9", "/caf%C3%A9"),  # bytes as chars come back as the same bytes
        ("/caf\u00e9\u20ac", "/caf%E9%E2%82%AC"),  # a char wider than a byte goes out as UTF-8
        ("/!$&'()*+,;=:@[]", "/!$&'()*+,;=:@[]"),
    ],
)
def test_escape_path(path: str, escaped: str) -> None:
    assert escape_path(path) == escaped


# -- joining: the table of Kong's Admin API reference, "Path handling algorithms" ------------------
# Source: docs.konghq.com, Admin API reference, Route Object, "Path handling algorithms" (the
# table of service.path x route.path x request x strip_path x path_handling). "blank" requests
# are the route path itself. One value is a typo on that page: for `/fv0/`, a blank request,
# no strip, v0 it prints `/s/fv01/`; the algorithm it documents (and Kong's code) gives `/s/fv0/`.

KONG_PATH_TABLE = [
    # service.path, route.path, request path, strip_path, path_handling, upstream path
    ("/s", "/fv0", "/fv0/req", False, "v0", "/s/fv0/req"),
    ("/s", "/fv0", "/fv0", False, "v0", "/s/fv0"),
    ("/s", "/fv1", "/fv1/req", False, "v1", "/sfv1/req"),
    ("/s", "/fv1", "/fv1", False, "v1", "/sfv1"),
    ("/s", "/tv0", "/tv0/req", True, "v0", "/s/req"),
    ("/s", "/tv0", "/tv0", True, "v0", "/s"),
    ("/s", "/tv1", "/tv1/req", True, "v1", "/s/req"),
    ("/s", "/tv1", "/tv1", True, "v1", "/s"),
    ("/s", "/fv0/", "/fv0/req", False, "v0", "/s/fv0/req"),
    ("/s", "/fv0/", "/fv0/", False, "v0", "/s/fv0/"),  # the page says /s/fv01/ (typo)
    ("/s", "/fv1/", "/fv1/req", False, "v1", "/sfv1/req"),
    ("/s", "/fv1/", "/fv1/", False, "v1", "/sfv1/"),
    ("/s", "/tv0/", "/tv0/req", True, "v0", "/s/req"),
    ("/s", "/tv0/", "/tv0/", True, "v0", "/s/"),
    ("/s", "/tv1/", "/tv1/req", True, "v1", "/sreq"),
    ("/s", "/tv1/", "/tv1/", True, "v1", "/s"),
]


@pytest.mark.parametrize(
    ("service", "route", "request_path", "strip", "handling", "upstream"), KONG_PATH_TABLE
)
def test_kong_path_handling_table(
    service: str, route: str, request_path: str, strip: bool, handling: str, upstream: str
) -> None:
    assert request_path.startswith(route)
    assert join_upstream_path(service, request_path, route, strip, handling) == upstream


@pytest.mark.parametrize(
    ("service", "request_path", "matched", "strip", "upstream"),
    [
        # no service path: "/" is the base
        (None, "/foo/bar", "/foo", True, "/bar"),
        (None, "/foo", "/foo", True, "/"),
        (None, "/foo/", "/foo", True, "/"),
        (None, "/foo/bar", "/foo", False, "/foo/bar"),
        (None, "/", "/", True, "/"),
        ("/", "/foo/bar", "/foo/", True, "/bar"),
        # a prefix is a string prefix: /foo strips from /foobar too
        ("/s", "/foobar", "/foo", True, "/s/bar"),
        (None, "/foobar", "/foo", True, "/bar"),
        # service path with a trailing slash
        ("/s/", "/foo/bar", "/foo", True, "/s/bar"),
        ("/s/", "/foo", "/foo", True, "/s"),
        ("/s/", "/foo/", "/foo", True, "/s/"),
        ("/s/", "/foo/bar", "/foo", False, "/s/foo/bar"),
        ("/s", "/", "/", False, "/s"),
        # a route without paths: the whole request path is the remainder
        ("/s", "/foo", None, True, "/s/foo"),
        ("/s", "/", None, True, "/s"),
        (None, "/foo", None, True, "/foo"),
        # the remainder never starts with a dot segment (sanitize_uri_postfix)
        ("/s", "/foo./bar", "/foo", True, "/s/bar"),
        ("/s", "/foo..", "/foo", True, "/s"),
        ("/s", "/foo../bar", "/foo", True, "/s/bar"),
        # a regex strips everything it matched
        ("/s", "/users/42/items", "/users/42", True, "/s/items"),
    ],
)
def test_join_v0_edges(
    service: str | None, request_path: str, matched: str | None, strip: bool, upstream: str
) -> None:
    assert join_upstream_path(service, request_path, matched, strip, "v0") == upstream


def test_join_v1_without_a_path_match() -> None:
    assert join_upstream_path("/s/", "/foo", None, True, "v1") == "/s/foo"
    assert join_upstream_path("/s", "/foo", None, False, "v1") == "/sfoo"
