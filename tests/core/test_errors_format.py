"""The summary message of a schema violation, as Kong's ``kong/db/errors.lua`` builds it:
``@entity`` errors first (in order), then fields sorted by name; a table-valued field error
expands to ``field.key: msg`` per key, sorted (array indices are 1-based and numeric)."""

from __future__ import annotations

from zonegate.core.errors import SchemaViolation, schema_violation_message


def test_one_field_error() -> None:
    assert schema_violation_message({"host": "required field missing"}) == (
        "schema violation (host: required field missing)"
    )


def test_one_entity_error() -> None:
    assert schema_violation_message({"@entity": ["certificate does not match key"]}) == (
        "schema violation (certificate does not match key)"
    )


def test_entity_errors_first_then_fields_sorted() -> None:
    fields = {
        "zeta": "z",
        "@entity": ["second check", "first check"],
        "alpha": "a",
        "Beta": "b",
    }
    # @entity keeps its own order; field names sort bytewise (upper case before lower case).
    assert schema_violation_message(fields) == (
        "5 schema violations (second check; first check; Beta: b; alpha: a; zeta: z)"
    )


def test_array_elements_are_numbered_from_one_and_holes_skipped() -> None:
    fields = {"paths": [None, "bad", None, "worse"]}
    assert schema_violation_message(fields) == "2 schema violations (paths.2: bad; paths.4: worse)"


def test_array_indices_sort_numerically() -> None:
    elements: list[str | None] = [None] * 11
    elements[1], elements[10] = "second", "eleventh"
    assert schema_violation_message({"hosts": elements}) == (
        "2 schema violations (hosts.2: second; hosts.11: eleventh)"
    )


def test_nested_record_errors() -> None:
    fields = {"service": {"id": "expected a valid UUID"}}
    assert schema_violation_message(fields) == "schema violation (service.id: expected a valid UUID)"


def test_nested_record_keys_are_sorted() -> None:
    fields = {"healthchecks": {"threshold": "t", "active": "a"}, "algorithm": "x"}
    assert schema_violation_message(fields) == (
        "3 schema violations (algorithm: x; healthchecks.active: a; healthchecks.threshold: t)"
    )


def test_mixed_entity_array_and_record_errors() -> None:
    fields = {
        "snis": "length must be 0",
        "@entity": ["entity rule"],
        "paths": ["p1"],
        "consumer": {"id": "expected a valid UUID"},
    }
    assert schema_violation_message(fields) == (
        "4 schema violations (entity rule; consumer.id: expected a valid UUID; paths.1: p1; "
        "snis: length must be 0)"
    )


def test_schema_violation_body_and_text() -> None:
    exc = SchemaViolation({"port": "value should be between 0 and 65535"})
    assert str(exc) == "schema violation (port: value should be between 0 and 65535)"
    assert exc.body() == {
        "code": 2,
        "name": "schema violation",
        "message": "schema violation (port: value should be between 0 and 65535)",
        "fields": {"port": "value should be between 0 and 65535"},
    }
