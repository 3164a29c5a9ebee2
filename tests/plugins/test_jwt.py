"""jwt through the real proxy (Kong's ``spec/03-plugins/16-jwt/03-access_spec.lua`` cases), the
token verification for every algorithm, and the config schema. Tokens are signed here with
``cryptography`` directly, not with the plugin's own code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from data_plane.test_proxy_e2e import echo, request, service
from harness.echo_upstream import EchoUpstream
from zonegate.core import declarative
from zonegate.core.errors import DeclarativeConfigError
from zonegate.plugins.jwt import token as jwt_token

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "ES256": (ec.SECP256R1(), 32),
    "ES384": (ec.SECP384R1(), 48),
    "ES512": (ec.SECP521R1(), 66),
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(alg: str, data: bytes, key: Any) -> bytes:
    if alg.startswith("HS"):
        return hmac.new(key, data, getattr(hashlib, "sha" + alg[2:])).digest()
    if alg.startswith("RS"):
        return bytes(key.sign(data, padding.PKCS1v15(), HASHES[alg[2:]]()))
    if alg.startswith("PS"):
        hash_algorithm = HASHES[alg[2:]]()
        pss = padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=padding.PSS.DIGEST_LENGTH)
        return bytes(key.sign(data, pss, hash_algorithm))
    if alg.startswith("ES"):
        size = CURVES[alg][1]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(HASHES[alg[2:]]())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return bytes(key.sign(data))  # EdDSA


def encode(claims: dict[str, Any], key: Any, alg: str = "HS256", header: dict[str, Any] | None = None) -> str:
    head = header if header is not None else {"typ": "JWT", "alg": alg}
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(alg, signing_input.encode(), key))}"


def public_pem(private_key: Any) -> str:
    return str(
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_key_for(alg: str) -> Any:
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg.startswith("ES"):
        return ec.generate_private_key(CURVES[alg][0])
    return ed25519.Ed25519PrivateKey.generate()


def payload(iss: str | None = None, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"nbf": now - 30, "iat": now, "exp": now + 3600, **extra}
    if iss is not None:
        claims["iss"] = iss
    return claims


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seen(body: bytes) -> dict[str, str]:
    return dict(echo(body)["headers_lower"])


def route(name: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "paths": [f"/{name}"], "plugins": [{"name": "jwt", "config": config}]}


def test_jwt(zonegate_node_factory: Any, echo_upstream: EchoUpstream) -> None:
    asymmetric = {alg: private_key_for(alg) for alg in ("RS256", "ES256", "ES384", "PS256", "EdDSA")}
    hs384_secret, hs512_secret = "s" * 48, "t" * 64
    node = zonegate_node_factory(
        {
            "_format_version": "3.0",
            "services": [
                {
                    **service("svc", echo_upstream),
                    "routes": [
                        route("jwt"),
                        route("params", uri_param_names=["token", "jwt"]),
                        route("claims", claims_to_verify=["nbf", "exp"]),
                        route("aud", key_claim_name="aud"),
                        route("kid", key_claim_name="kid"),
                        route("b64", secret_is_base64=True),
                        route("anon", anonymous="no-body"),
                        route("preflight", run_on_preflight=False),
                        route("cookies", cookie_names=["silly", "crumble"]),
                        route("maxexp", claims_to_verify=["exp"], maximum_expiration=300),
                        route("custom", header_names=["CustomAuthorization"], realm="api"),
                    ],
                }
            ],
            "consumers": [
                {
                    "username": "jwt_tests_consumer",
                    "custom_id": "j-1",
                    "jwt_secrets": [
                        {"key": "hs-key", "secret": "hs-secret"},
                        {"key": "hs384-key", "algorithm": "HS384", "secret": hs384_secret},
                        {"key": "hs512-key", "algorithm": "HS512", "secret": hs512_secret},
                        {"key": "b64-key", "secret": base64.b64encode(b"raw \x00 secret").decode()},
                    ],
                },
                {
                    "username": "asymmetric",
                    "jwt_secrets": [
                        # A file states the secret Kong would generate; asymmetric ones ignore it.
                        {
                            "key": f"{alg}-key",
                            "algorithm": alg,
                            "rsa_public_key": public_pem(key),
                            "secret": "x",
                        }
                        for alg, key in asymmetric.items()
                    ],
                },
                {"username": "no-body"},
            ],
        }
    )
    hs = b"hs-secret"

    # No token: 401 Unauthorized, Kong's body as kong.response.exit sends it, a bare challenge.
    status, headers, body = request(node, "GET", "/jwt/x")
    assert (status, body) == (401, b'{"message":"Unauthorized"}')
    assert headers["www-authenticate"] == "Bearer"

    def refused(path: str, message: Any, headers: dict[str, str] | None = None) -> None:
        status, answer_headers, body = request(node, "GET", path, headers=headers)
        expected = message if isinstance(message, dict) else {"message": message}
        assert (status, json.loads(body)) == (401, expected), path
        assert answer_headers["www-authenticate"] == 'Bearer error="invalid_token"'

    refused("/jwt/x", "No mandatory 'iss' in claims", bearer(encode(payload(), hs)))
    refused("/jwt/x", "Invalid 'iss' in claims", bearer(encode(payload(""), hs)))
    refused("/jwt/x", "No credentials found for given 'iss'", bearer(encode(payload("123456789"), hs)))
    refused("/jwt/x", "Invalid signature", bearer(encode(payload("hs-key"), b"foo")))
    wrong_alg = encode(payload("hs-key"), hs, "HS256", {"typ": "JWT", "alg": "RS256"})
    refused("/jwt/x", "Invalid algorithm", bearer(wrong_alg))
    refused("/jwt/x", "Bad token; invalid JSON", {"Authorization": "Bearer abc"})
    good = encode(payload("hs-key"), hs)
    refused("/jwt/x", "Bad token; invalid signature", bearer(good.rsplit(".", 1)[0] + ".a!b"))
    unsigned = encode(payload("hs-key"), hs, "HS256", {"alg": "none"})
    refused("/jwt/x", "Bad token; invalid alg", bearer(unsigned))
    other = encode(payload("hs-key", sub="other"), hs)
    refused("/jwt/x?jwt=" + other, "Multiple tokens provided", bearer(good))

    # Verified: the consumer's headers go upstream, the token too.
    status, _, body = request(node, "GET", "/jwt/x?jwt=" + good, headers=bearer(good))  # same token twice
    assert status == 200
    upstream = seen(body)
    assert upstream["authorization"] == f"Bearer {good}"
    assert (
        upstream["x-consumer-username"] == "jwt_tests_consumer" and upstream["x-consumer-custom-id"] == "j-1"
    )
    assert upstream["x-credential-identifier"] == "hs-key" and "x-anonymous-consumer" not in upstream
    assert request(node, "GET", "/jwt/x", headers={"Authorization": f"bearer   {good}"})[0] == 200
    assert request(node, "GET", "/jwt/x?jwt=" + good)[0] == 200
    assert request(node, "GET", "/params/x?token=" + good)[0] == 200
    for key, secret, alg in (("hs384-key", hs384_secret, "HS384"), ("hs512-key", hs512_secret, "HS512")):
        assert (
            request(node, "GET", "/jwt/x", headers=bearer(encode(payload(key), secret.encode(), alg)))[0]
            == 200
        )
    for alg, private_key in asymmetric.items():
        signed = encode(payload(f"{alg}-key"), private_key, alg)
        status, _, body = request(node, "GET", "/jwt/x", headers=bearer(signed))
        assert (status, seen(body)["x-consumer-username"]) == (200, "asymmetric"), alg
        tampered = encode(payload(f"{alg}-key", admin=True), private_key, alg).rsplit(".", 1)[0]
        refused("/jwt/x", "Invalid signature", bearer(tampered + "." + signed.rsplit(".", 1)[1]))

    # Where the key is: another claim, or the token's header.
    assert request(node, "GET", "/aud/x", headers=bearer(encode(payload(aud="hs-key"), hs)))[0] == 200
    kid = encode(payload(), hs, "HS256", {"typ": "JWT", "alg": "HS256", "kid": "hs-key"})
    assert request(node, "GET", "/kid/x", headers=bearer(kid))[0] == 200
    # secret_is_base64: the credential holds base64; tokens are signed with the decoded secret.
    b64_token = encode(payload("b64-key"), b"raw \x00 secret")
    assert request(node, "GET", "/b64/x", headers=bearer(b64_token))[0] == 200

    # Registered claims: each failure named, as Kong's body.
    now = int(time.time())
    refused("/claims/x", {"exp": "token expired"}, bearer(encode(payload("hs-key", exp=now - 1), hs)))
    refused("/claims/x", {"nbf": "token not valid yet"}, bearer(encode(payload("hs-key", nbf=now + 60), hs)))
    refused("/claims/x", {"exp": "must be a number"}, bearer(encode(payload("hs-key", exp="soon"), hs)))
    bare = encode({"iss": "hs-key"}, hs)
    refused("/claims/x", {"exp": "must be a number", "nbf": "must be a number"}, bearer(bare))
    assert request(node, "GET", "/jwt/x", headers=bearer(bare))[0] == 200  # nothing to verify there
    assert request(node, "GET", "/claims/x", headers=bearer(good))[0] == 200
    long_lived = encode(payload("hs-key", exp=now + 3600), hs)
    refused("/maxexp/x", {"exp": "exceeds maximum allowed expiration"}, bearer(long_lived))
    assert (
        request(node, "GET", "/maxexp/x", headers=bearer(encode(payload("hs-key", exp=now + 270), hs)))[0]
        == 200
    )

    # Cookies and custom headers.
    for cookie in (f"crumble={good}; path=/", f"other=1; silly={good}", f"SILLY={good}"):
        assert request(node, "GET", "/cookies/x", headers={"Cookie": cookie})[0] == 200, cookie
    unknown = encode(payload("incorrect-issuer"), hs)
    refused("/cookies/x", "No credentials found for given 'iss'", {"Cookie": f"crumble={unknown}"})
    assert request(node, "GET", "/custom/x", headers={"CustomAuthorization": f"Bearer {good}"})[0] == 200
    status, headers, _ = request(node, "GET", "/custom/x", headers=bearer(good))
    assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="api"')

    # Preflight and anonymous.
    assert request(node, "OPTIONS", "/preflight/x")[0] == 200
    assert request(node, "OPTIONS", "/jwt/x")[0] == 401
    status, _, body = request(node, "GET", "/anon/x", headers=bearer(unknown))
    assert (status, seen(body)["x-consumer-username"], seen(body)["x-anonymous-consumer"]) == (
        200,
        "no-body",
        "true",
    )
    status, _, body = request(node, "GET", "/anon/x", headers=bearer(good))
    upstream = seen(body)
    assert upstream["x-consumer-username"] == "jwt_tests_consumer" and "x-anonymous-consumer" not in upstream


@pytest.mark.parametrize("alg", sorted(jwt_token.ALGORITHMS))
def test_every_algorithm_verifies_its_own_signature_and_nothing_else(alg: str) -> None:
    if alg.startswith("HS"):
        private_key: Any = b"secret-" + alg.encode()
        key = private_key
    else:
        private_key = private_key_for(alg)
        key = public_pem(private_key).encode()
    token = jwt_token.decode(encode({"iss": "k"}, private_key, alg))
    assert jwt_token.verify_signature(token, key)
    forged = jwt_token.decode(encode({"iss": "k", "admin": True}, private_key, alg))
    assert not jwt_token.verify_signature(
        jwt_token.Token(forged.header, forged.claims, forged.signing_input, token.signature), key
    )
    if not alg.startswith("HS"):  # the key of another algorithm family never verifies
        other = "ES256" if not alg.startswith("ES") else "RS256"
        assert not jwt_token.verify_signature(token, public_pem(private_key_for(other)).encode())


def test_es256_on_the_wrong_curve_is_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    token = jwt_token.decode(encode({"iss": "k"}, p384, "ES384", {"alg": "ES256"}))
    assert not jwt_token.verify_signature(token, public_pem(p384).encode())


def test_claim_checks() -> None:
    now = 1_000_000
    assert jwt_token.claim_errors({"exp": now, "nbf": now}, ["exp", "nbf"], now) == {"exp": "token expired"}
    assert jwt_token.claim_errors({"exp": now + 1, "nbf": now + 1}, ["exp", "nbf"], now) == {
        "nbf": "token not valid yet"
    }
    assert jwt_token.claim_errors({"exp": True}, ["exp"], now) == {"exp": "must be a number"}
    assert not jwt_token.exceeds_maximum_expiration({"exp": now + 300}, 300, now)
    assert jwt_token.exceeds_maximum_expiration({"exp": now + 301}, 300, now)
    assert jwt_token.exceeds_maximum_expiration({}, 300, now)


def config_errors(config: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(DeclarativeConfigError) as info:
        declarative.load({"_format_version": "3.0", "plugins": [{"name": "jwt", "config": config}]})
    return dict(info.value.fields["plugins"][0])


def test_schema_defaults_and_refusals() -> None:
    config = declarative.load({"_format_version": "3.0", "plugins": [{"name": "jwt"}]})
    assert config.of("plugins")[0]["config"] == {
        "uri_param_names": ["jwt"],
        "cookie_names": [],
        "key_claim_name": "iss",
        "secret_is_base64": False,
        "claims_to_verify": None,
        "anonymous": None,
        "run_on_preflight": True,
        "maximum_expiration": 0,
        "header_names": ["authorization"],
        "realm": None,
    }
    assert config_errors({"maximum_expiration": -1, "claims_to_verify": ["exp", "nbf"]}) == {
        "config": {"maximum_expiration": "value should be between 0 and 31536000"}
    }
    # Kong's conditional entity check, where Kong reports it.
    assert config_errors({"maximum_expiration": 60, "claims_to_verify": ["nbf"]}) == {
        "@entity": ["failed conditional validation given value of field 'config.maximum_expiration'"],
        "config": {"claims_to_verify": "expected to contain: exp"},
    }
    assert config_errors({"claims_to_verify": ["iat"]}) == {
        "config": {"claims_to_verify": ["expected one of: exp, nbf"]}
    }
    # Valid: exp listed, or no claims_to_verify at all (Kong lets a null through the conditional).
    for valid in ({"maximum_expiration": 60, "claims_to_verify": ["exp", "nbf"]}, {"maximum_expiration": 60}):
        declarative.load({"_format_version": "3.0", "plugins": [{"name": "jwt", "config": valid}]})
