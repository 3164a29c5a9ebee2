"""Hypothesis properties of field rules: port range, HTTP method sets, tag characters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from .entity_helpers import kong_body, validate, violation

# Printable ASCII (space to '~') without ',' and '/', plus any non-ASCII, non-surrogate character.
TAG_ASCII = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",/")
tag_chars = st.one_of(
    st.sampled_from(TAG_ASCII),
    st.characters(min_codepoint=0x80, exclude_categories=("Cs",)),
)
good_tags = st.text(tag_chars, min_size=1, max_size=12)
methods = st.from_regex(r"[A-Z]{1,10}", fullmatch=True)


def first_occurrences(values: list[str]) -> list[str]:
    seen: list[str] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


@given(st.integers(min_value=0, max_value=65535))
def test_any_valid_port_is_accepted(port: int) -> None:
    assert validate("services", {"host": "example.com", "port": port})["port"] == port


@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=65536)))
def test_any_port_outside_the_range_is_refused(port: int) -> None:
    body = violation("services", {"host": "example.com", "port": port})
    assert body == kong_body(
        "schema violation (port: value should be between 0 and 65535)",
        {"port": "value should be between 0 and 65535"},
    )


@given(st.lists(methods, min_size=1, max_size=12))
def test_methods_are_a_set_keeping_first_occurrence(values: list[str]) -> None:
    result = validate("routes", {"methods": values})
    assert result["methods"] == first_occurrences(values)


@given(st.lists(methods, min_size=1, max_size=6), st.from_regex(r"[a-z][A-Za-z]{0,5}", fullmatch=True))
def test_a_method_with_a_lower_case_letter_is_refused(values: list[str], bad: str) -> None:
    body = violation("routes", {"methods": [*values, bad]})
    errors = body["fields"]["methods"]
    position = first_occurrences([*values, bad]).index(bad)
    assert errors[position] == f"invalid value: {bad}"
    assert [e for i, e in enumerate(errors) if i != position] == [None] * (len(errors) - 1)


@given(st.lists(good_tags, min_size=1, max_size=5))
def test_printable_tags_without_comma_or_slash_are_accepted(tags: list[str]) -> None:
    assert validate("consumers", {"username": "u", "tags": tags})["tags"] == first_occurrences(tags)


@given(good_tags, st.sampled_from(",/"), good_tags)
def test_tags_with_comma_or_slash_are_refused(head: str, separator: str, tail: str) -> None:
    tag = head + separator + tail
    message = f"invalid tag '{tag}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
    body = violation("consumers", {"username": "u", "tags": [tag]})
    assert body == kong_body(f"schema violation (tags.1: {message})", {"tags": [message]})


@given(st.characters(max_codepoint=0x1F) | st.just("\x7f"))
def test_tags_with_control_characters_are_refused(control: str) -> None:
    body = violation("consumers", {"username": "u", "tags": [f"a{control}b"]})
    assert list(body["fields"]) == ["tags"]
    assert body["fields"]["tags"][0].startswith("invalid tag '")
