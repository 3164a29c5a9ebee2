"""Certificates, SNIs and CA certificates, with real PEM material made by ``pki``.

Kong 3.x: ``certificates.lua`` (mutually_required cert_alt/key_alt and three independent
custom checks), ``snis.lua`` (wildcard_host name), ``ca_certificates.lua`` (one certificate,
not expired, then the CA basic constraint, in that order).
"""

from __future__ import annotations

from functools import cache

import pytest

from . import pki
from .entity_helpers import CERTIFICATE_ID, kong_body, validate, violation

SAME_TYPE = (
    "certificate and alternative certificate need to have different type (e.g. RSA and ECDSA), "
    "the provided certificates were both of the same type"
)
ALL_OR_NONE = "all or none of these fields must be set: 'cert_alt', 'key_alt'"
NOT_A_CA = 'certificate does not appear to be a CA because it is missing the "CA" basic constraint'
EXPIRED = 'certificate expired, "Not After" time is in the past'


@cache
def ec_one() -> pki.Pem:
    return pki.ec_leaf("one.example.test")


@cache
def ec_two() -> pki.Pem:
    return pki.ec_leaf("two.example.test")


@cache
def rsa_one() -> pki.Pem:
    return pki.rsa_leaf()


@cache
def ed_one() -> pki.Pem:
    return pki.ed25519_leaf()


# -- certificates -------------------------------------------------------------------------------


def test_key_must_match_certificate() -> None:
    body = violation("certificates", {"cert": ec_one().cert, "key": ec_two().key})
    assert body == kong_body(
        "schema violation (certificate does not match key)", {"@entity": ["certificate does not match key"]}
    )


def test_rsa_key_for_ec_certificate() -> None:
    body = violation("certificates", {"cert": ec_one().cert, "key": rsa_one().key})
    assert body["fields"] == {"@entity": ["certificate does not match key"]}


def test_cert_alt_without_key_alt() -> None:
    body = violation("certificates", {"cert": ec_one().cert, "key": ec_one().key, "cert_alt": rsa_one().cert})
    assert body == kong_body(f"schema violation ({ALL_OR_NONE})", {"@entity": [ALL_OR_NONE]})


def test_key_alt_without_cert_alt() -> None:
    body = violation("certificates", {"cert": ec_one().cert, "key": ec_one().key, "key_alt": rsa_one().key})
    assert body == kong_body(f"schema violation ({ALL_OR_NONE})", {"@entity": [ALL_OR_NONE]})


def test_alternate_of_the_same_key_type() -> None:
    data = {"cert": ec_one().cert, "key": ec_one().key, "cert_alt": ec_two().cert, "key_alt": ec_two().key}
    body = violation("certificates", data)
    assert body == kong_body(f"schema violation ({SAME_TYPE})", {"@entity": [SAME_TYPE]})


def test_alternate_key_must_match_alternate_certificate() -> None:
    data = {"cert": ec_one().cert, "key": ec_one().key, "cert_alt": rsa_one().cert, "key_alt": ec_two().key}
    body = violation("certificates", data)
    message = "alternative certificate does not match key"
    assert body == kong_body(f"schema violation ({message})", {"@entity": [message]})


def test_alternate_mismatch_and_same_type_are_both_reported() -> None:
    # The three custom checks in certificates.lua are independent: each one that fails adds
    # its own @entity entry.
    data = {"cert": ec_one().cert, "key": ec_one().key, "cert_alt": ec_two().cert, "key_alt": rsa_one().key}
    body = violation("certificates", data)
    assert body == kong_body(
        f"2 schema violations (alternative certificate does not match key; {SAME_TYPE})",
        {"@entity": ["alternative certificate does not match key", SAME_TYPE]},
    )


def test_same_type_is_checked_even_without_key_alt() -> None:
    # The type check's field_sources are cert and cert_alt only.
    data = {"cert": ec_one().cert, "key": ec_one().key, "cert_alt": ec_two().cert}
    body = violation("certificates", data)
    assert body == kong_body(
        f"2 schema violations ({ALL_OR_NONE}; {SAME_TYPE})", {"@entity": [ALL_OR_NONE, SAME_TYPE]}
    )


def test_ec_and_ed25519_are_different_key_types() -> None:
    # Kong compares OpenSSL key type ids: EVP_PKEY_EC and EVP_PKEY_ED25519 differ.
    data = {"cert": ec_one().cert, "key": ec_one().key, "cert_alt": ed_one().cert, "key_alt": ed_one().key}
    result = validate("certificates", data)
    assert (result["cert_alt"], result["key_alt"]) == (ed_one().cert, ed_one().key)


def test_rsa_main_with_ec_alternate() -> None:
    data = {"cert": rsa_one().cert, "key": rsa_one().key, "cert_alt": ec_one().cert, "key_alt": ec_one().key}
    assert validate("certificates", data)["cert"] == rsa_one().cert


def test_garbage_certificate_and_key_are_field_errors() -> None:
    body = violation("certificates", {"cert": "not a pem", "key": "not a key either"})
    assert set(body["fields"]) == {"cert", "key"}
    assert body["fields"]["cert"].startswith("invalid certificate: ")
    assert body["fields"]["key"].startswith("invalid key: ")
    assert body["message"].startswith("2 schema violations (cert: invalid certificate: ")


def test_certificate_requires_cert_and_key() -> None:
    body = violation("certificates", {})
    assert body == kong_body(
        "2 schema violations (cert: required field missing; key: required field missing)",
        {"cert": "required field missing", "key": "required field missing"},
    )


# -- snis ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("api.*.example.com", "wildcard must be leftmost or rightmost character"),
        ("*.example.*", "only one wildcard must be specified"),
        ("10.0.0.1", "must not be an IP"),
        ("example.com:443", "must not have a port"),
        ("bad host", "invalid value: bad host"),
    ],
)
def test_sni_name_rules(name: str, message: str) -> None:
    body = violation("snis", {"name": name, "certificate": {"id": CERTIFICATE_ID}})
    assert body == kong_body(f"schema violation (name: {message})", {"name": message})


def test_sni_needs_a_certificate() -> None:
    body = violation("snis", {"name": "example.com"})
    assert body == kong_body(
        "schema violation (certificate: required field missing)", {"certificate": "required field missing"}
    )


# -- ca_certificates ----------------------------------------------------------------------------


def test_ca_certificate_must_be_a_ca() -> None:
    body = violation("ca_certificates", {"cert": ec_one().cert})
    assert body == kong_body(f"schema violation ({NOT_A_CA})", {"@entity": [NOT_A_CA]})


def test_ca_certificate_without_basic_constraints_is_not_a_ca() -> None:
    pem = pki.self_signed(pki.ec_key(), basic_constraints=False)
    body = violation("ca_certificates", {"cert": pem.cert})
    assert body["fields"] == {"@entity": [NOT_A_CA]}


def test_expired_ca_certificate() -> None:
    body = violation("ca_certificates", {"cert": pki.expired_ca().cert})
    assert body == kong_body(f"schema violation ({EXPIRED})", {"@entity": [EXPIRED]})


def test_expiry_is_checked_before_the_ca_constraint() -> None:
    # ca_certificates.lua tests "Not After" first and returns, so an expired leaf reports expiry.
    body = violation("ca_certificates", {"cert": pki.expired_leaf().cert})
    assert body == kong_body(f"schema violation ({EXPIRED})", {"@entity": [EXPIRED]})


def test_ca_certificate_refuses_a_bundle() -> None:
    bundle = pki.ca_cert("CA one").cert + pki.ca_cert("CA two").cert
    body = violation("ca_certificates", {"cert": bundle})
    message = "please submit only one certificate at a time"
    assert body == kong_body(f"schema violation ({message})", {"@entity": [message]})


def test_ca_certificate_garbage_is_a_field_error_only() -> None:
    body = violation("ca_certificates", {"cert": "garbage"})
    assert list(body["fields"]) == ["cert"]
    assert body["fields"]["cert"].startswith("invalid certificate: ")
