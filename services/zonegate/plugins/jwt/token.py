"""JSON Web Tokens as Kong's ``jwt_parser.lua`` reads them: decode, verify the signature, check
the registered claims. Errors keep Kong's words (the handler prefixes ``Bad token; ``).

Signatures are checked with ``cryptography``: HMAC (HS256/384/512), RSA PKCS#1 v1.5
(RS256/384/512), RSA-PSS (PS256/384/512), ECDSA with the JOSE ``r || s`` encoding
(ES256/384/512) and EdDSA (Ed25519, Ed448). Public keys are parsed once per PEM and cached.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from zonegate.plugins import nginx_base64

_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_HMAC_DIGESTS: Final = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
# ECDSA: the curve each algorithm requires, and the size of r and of s in its signatures.
_CURVES: Final[dict[str, tuple[type[ec.EllipticCurve], int]]] = {
    "ES256": (ec.SECP256R1, 32),
    "ES384": (ec.SECP384R1, 48),
    "ES512": (ec.SECP521R1, 66),
}
ALGORITHMS: Final = frozenset(
    {*_HMAC_DIGESTS, "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", *_CURVES, "EdDSA"}
)


class TokenError(ValueError):
    """The token cannot be read; ``str(error)`` is Kong's reason (``invalid JSON``...)."""


@dataclass(frozen=True, slots=True)
class Token:
    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])


def _json(segment: str) -> Any:
    raw = nginx_base64.decode_url(segment)
    if raw is None:
        raise TokenError("invalid JSON")
    try:
        return json.loads(raw)
    except ValueError as exc:  # bad JSON or bad UTF-8
        raise TokenError("invalid JSON") from exc


def decode(token: str) -> Token:
    parts = token.split(".", 2)
    if len(parts) < 3:
        raise TokenError("invalid JSON")
    header_64, claims_64, signature_64 = parts
    header, claims = _json(header_64), _json(claims_64)
    alg = header.get("alg") if isinstance(header, dict) else None
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise TokenError("invalid alg")
    if not isinstance(claims, dict):
        raise TokenError("invalid claims")
    signature = nginx_base64.decode_url(signature_64)
    if signature is None:
        raise TokenError("invalid signature")
    return Token(header, claims, f"{header_64}.{claims_64}".encode("latin-1"), signature)


@lru_cache(maxsize=4096)
def _public_key(pem: bytes) -> PublicKeyTypes | None:
    try:
        return serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        return None


def verify_signature(token: Token, key: bytes) -> bool:
    """``key``: the HMAC secret, or the PEM public key for the asymmetric algorithms."""
    alg, data, signature = token.alg, token.signing_input, token.signature
    digest = _HMAC_DIGESTS.get(alg)
    if digest is not None:
        return hmac.compare_digest(hmac.new(key, data, digest).digest(), signature)
    public_key = _public_key(key)
    try:
        if alg.startswith(("RS", "PS")) and isinstance(public_key, rsa.RSAPublicKey):
            hash_algorithm = _HASHES[alg[2:]]()
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if alg.startswith("RS")
                else padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=padding.PSS.AUTO)
            )
            public_key.verify(signature, data, pad, hash_algorithm)
            return True
        if alg in _CURVES and isinstance(public_key, ec.EllipticCurvePublicKey):
            curve, size = _CURVES[alg]
            if not isinstance(public_key.curve, curve) or len(signature) != 2 * size:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
            public_key.verify(der, data, ec.ECDSA(_HASHES[alg[2:]]()))
            return True
        if alg == "EdDSA" and isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, data)
            return True
    except InvalidSignature:
        return False
    return False


def _number(value: Any) -> float | None:
    """A JSON number claim (Lua's ``type(v) == "number"``: not a boolean, not a string)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def claim_errors(claims: Mapping[str, Any], to_verify: Iterable[str], now: int) -> dict[str, str]:
    """Kong's ``verify_registered_claims``: ``{claim: reason}`` for each claim that fails."""
    errors: dict[str, str] = {}
    for name in to_verify:
        value = _number(claims.get(name))
        if value is None:
            errors[name] = "must be a number"
        elif name == "exp" and value <= now:
            errors[name] = "token expired"
        elif name == "nbf" and value > now:
            errors[name] = "token not valid yet"
    return errors


def exceeds_maximum_expiration(claims: Mapping[str, Any], maximum: float, now: int) -> bool:
    exp = _number(claims.get("exp"))
    return exp is None or exp - now > maximum
