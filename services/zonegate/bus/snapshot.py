"""The snapshot codec: a Config in, signed bytes out, and back, with every check on the way in.

Encoding (control plane): canonical JSON -> zstd -> sha256 -> header (version, hashes, versions,
plugins, payload digest) -> signature over the header bytes -> ``SignedSnapshot``. When the
compressed payload is larger than the bus carries in one message, the message keeps only the
header and a reference, and the payload goes to the object store (the caller moves the bytes).

Decoding (data plane) refuses, with a reason that goes into the nack: bytes that are not a
snapshot, a bad signature or signer, another cluster or group, a payload whose digest or size
is wrong, a payload that does not decompress within its declared size, and a config that fails
the consistency check (a dangling reference). Version compatibility is
checked separately (``core.compat``) because it is a different status for the operator.

A delta (``encode_delta``) is the same envelope around a ``ConfigDelta`` with the base it applies
to in the signed header; it travels inside the announcement, never in the stream, and
``open_message`` takes one only where the caller expects one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec
import zstandard
from google.protobuf.message import DecodeError

from zonegate import __version__
from zonegate.bus.signing import SignatureError, Signer, Verifier
from zonegate.bus.v1 import bus_pb2
from zonegate.core import consistency
from zonegate.core.canonical import ConfigHash, EncodingCache, encode_config
from zonegate.core.config import Config
from zonegate.core.config_delta import Change, ConfigDelta

COMPRESSION: Final = "zstd"
# A decompression bomb guard: no real config comes near it (100k entities are about 60 MiB).
MAX_RAW_SIZE: Final = 1024 * 1024 * 1024
_LEVEL: Final = 3  # zstd level 3 compresses a 10k-route config 15x in tens of milliseconds


class SnapshotRejected(Exception):
    """A snapshot that must not be applied; ``str()`` is the reason sent in the nack."""


@dataclass(frozen=True, slots=True)
class EncodedSnapshot:
    header: bus_pb2.SnapshotHeader
    message: bytes  # the SignedSnapshot to publish
    payload: bytes  # compressed; goes to the object store when ``header.HasField("object")``

    @property
    def in_object_store(self) -> bool:
        return self.header.HasField("object")


def plugins_used(config: Config, versions: Mapping[str, str]) -> dict[str, str]:
    """The plugins a config configures, each with the control plane's version of it."""
    return {
        name: versions.get(name, __version__) for name in sorted({p["name"] for p in config.of("plugins")})
    }


def object_name(cluster: str, group: str, version: int, digest: bytes) -> str:
    return f"{cluster}.{group}.{version}.{digest.hex()[:16]}"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked config, its canonical bytes and the header fields that do not depend on the
    compressed payload: enough to sign a delta before the full snapshot is compressed."""

    header: bus_pb2.SnapshotHeader
    raw: bytes


def prepare(
    config: Config,
    *,
    version: int,
    cluster: str,
    group: str,
    signer_node: str,
    plugin_versions: Mapping[str, str],
    cache: EncodingCache | None = None,
    changed_from: Change | None = None,
) -> Prepared:
    """Check and encode a config; raises SnapshotRejected when it fails its own check.

    ``cache``: the encodings of the last snapshot built with it (one publisher's, used by one
    thread at a time), so unchanged entities are not encoded again. ``changed_from``: what
    changed since a snapshot that passed this check, so only what it touches is checked again
    (and, when that snapshot is the one ``cache`` encoded last, encoded again)."""
    if changed_from is not None:
        problems = consistency.delta_problems(config, changed_from.delta)
    else:
        problems = consistency.problems(config)
    if problems:
        raise SnapshotRejected("config fails its consistency check: " + "; ".join(problems))
    raw, hashes = encode_config(config, cache, changed_from)
    header = bus_pb2.SnapshotHeader(
        version=version,
        config_hash=hashes.config_hash,
        group_hashes=hashes.hashes,
        zonegate_version=__version__,
        plugins=plugins_used(config, plugin_versions),
        created_at_ms=int(time.time() * 1000),
        cluster=cluster,
        group=group,
        compression=COMPRESSION,
        signer=signer_node,
    )
    return Prepared(header, raw)


def seal(prepared: Prepared, *, signer: Signer, inline_limit: int, bucket: str) -> EncodedSnapshot:
    """Compress the prepared config, complete its header and sign it."""
    payload = zstandard.ZstdCompressor(level=_LEVEL).compress(prepared.raw)
    digest = hashlib.sha256(payload).digest()
    header = bus_pb2.SnapshotHeader()
    header.CopyFrom(prepared.header)
    header.payload_sha256 = digest
    header.payload_size = len(payload)
    header.raw_size = len(prepared.raw)
    inline = len(payload) <= inline_limit
    if not inline:
        header.object.bucket = bucket
        header.object.name = object_name(header.cluster, header.group, header.version, digest)
    message = _signed(header, signer, payload if inline else b"")
    return EncodedSnapshot(header, message, payload)


def encode(
    config: Config,
    *,
    version: int,
    cluster: str,
    group: str,
    signer: Signer,
    signer_node: str,
    plugin_versions: Mapping[str, str],
    inline_limit: int,
    bucket: str,
    cache: EncodingCache | None = None,
    changed_from: Change | None = None,
) -> EncodedSnapshot:
    """``prepare`` then ``seal``: a signed snapshot in one call."""
    prepared = prepare(
        config,
        version=version,
        cluster=cluster,
        group=group,
        signer_node=signer_node,
        plugin_versions=plugin_versions,
        cache=cache,
        changed_from=changed_from,
    )
    return seal(prepared, signer=signer, inline_limit=inline_limit, bucket=bucket)


def _signed(header: bus_pb2.SnapshotHeader, signer: Signer, payload: bytes) -> bytes:
    header_bytes = header.SerializeToString(deterministic=True)
    message = bus_pb2.SignedSnapshot(
        header=header_bytes,
        signature=signer.sign(header_bytes),
        signature_algorithm=signer.algorithm,
        signer_certificate=signer.certificate_der,
        payload=payload,
    )
    return message.SerializeToString(deterministic=True)


def encode_delta(
    target: bus_pb2.SnapshotHeader,
    delta: ConfigDelta,
    *,
    base_version: int,
    base_config_hash: str,
    signer: Signer,
    max_raw_size: int,
) -> bytes | None:
    """A signed delta from the base to the snapshot ``target`` (its header, prepared or sealed)
    describes; None when it is larger than ``max_raw_size`` (the data planes read the full
    snapshot then, as without deltas)."""
    raw = msgspec.json.encode(delta.document())
    if len(raw) > max_raw_size:
        return None
    payload = zstandard.ZstdCompressor(level=_LEVEL).compress(raw)
    header = bus_pb2.SnapshotHeader()
    header.CopyFrom(target)
    header.ClearField("object")
    header.payload_sha256 = hashlib.sha256(payload).digest()
    header.payload_size = len(payload)
    header.raw_size = len(raw)
    header.base_version = base_version
    header.base_config_hash = base_config_hash
    return _signed(header, signer, payload)


@dataclass(frozen=True, slots=True)
class OpenedSnapshot:
    """A snapshot whose signature verified; the payload may still be in the object store."""

    header: bus_pb2.SnapshotHeader
    inline_payload: bytes

    @property
    def version(self) -> int:
        return int(self.header.version)

    @property
    def config_hash(self) -> str:
        return str(self.header.config_hash)

    @property
    def hashes(self) -> ConfigHash:
        """The config hash and sub-hashes the control plane signed: what to rebuild, no re-hash."""
        return ConfigHash(str(self.header.config_hash), dict(self.header.group_hashes))

    @property
    def base(self) -> tuple[int, str] | None:
        """A delta's base (version, config hash); None for a full snapshot."""
        if not self.header.base_config_hash:
            return None
        return int(self.header.base_version), str(self.header.base_config_hash)

    @property
    def object_reference(self) -> tuple[str, str] | None:
        if not self.header.HasField("object"):
            return None
        return self.header.object.bucket, self.header.object.name


def open_message(
    data: bytes, verifier: Verifier, *, cluster: str, group: str, delta: bool = False
) -> OpenedSnapshot:
    """Parse and verify the signed envelope; the payload is checked by ``decode_payload`` (or
    ``decode_delta`` when ``delta``: a delta is only ever taken where one is expected)."""
    try:
        signed = bus_pb2.SignedSnapshot.FromString(data)
        header = bus_pb2.SnapshotHeader.FromString(signed.header)
    except DecodeError as exc:
        raise SnapshotRejected(f"not a snapshot: {exc}") from None
    try:
        verifier.verify(
            signed.header, signed.signature, signed.signature_algorithm, signed.signer_certificate
        )
    except SignatureError as exc:
        raise SnapshotRejected(f"signature check failed: {exc}") from None
    if header.cluster != cluster or header.group != group:
        raise SnapshotRejected(
            f"snapshot is for cluster {header.cluster!r} group {header.group!r}, "
            f"this node is in cluster {cluster!r} group {group!r}"
        )
    if header.compression != COMPRESSION:
        raise SnapshotRejected(f"unknown compression {header.compression!r}")
    if bool(header.base_config_hash) != delta:
        expected = "a delta" if delta else "a full snapshot"
        raise SnapshotRejected(
            f"expected {expected}, got {'a delta' if header.base_config_hash else 'a full snapshot'}"
        )
    return OpenedSnapshot(header, signed.payload)


def _raw(opened: OpenedSnapshot, payload: bytes) -> bytes:
    """The payload, checked against the signed header, decompressed."""
    header = opened.header
    if len(payload) != header.payload_size:
        raise SnapshotRejected(
            f"payload is {len(payload)} bytes, the signed header says {header.payload_size} (truncated?)"
        )
    if hashlib.sha256(payload).digest() != header.payload_sha256:
        raise SnapshotRejected("payload digest does not match the signed header")
    if header.raw_size > MAX_RAW_SIZE:
        raise SnapshotRejected(f"payload declares {header.raw_size} bytes uncompressed, over the limit")
    try:
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=header.raw_size)
    except zstandard.ZstdError as exc:
        raise SnapshotRejected(f"payload does not decode: {exc}") from None


def decode_payload(opened: OpenedSnapshot, payload: bytes) -> Config:
    """Check the payload against the signed header and turn it into a consistent Config."""
    raw = _raw(opened, payload)
    try:
        document = msgspec.json.decode(raw)
        config = Config.build(document)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SnapshotRejected(f"payload does not decode: {exc}") from None
    # No re-hash here: the signed header carries the payload's sha256 (checked above) and the
    # config hash the control plane computed from the same bytes; hashing again costs as much as
    # parsing (97 ms at 10,000 routes) and proves nothing more.
    return _consistent(config)


def decode_delta(opened: OpenedSnapshot, payload: bytes) -> ConfigDelta:
    """Check a delta's payload against its signed header and parse it (applying is the caller's)."""
    raw = _raw(opened, payload)
    try:
        return ConfigDelta.from_document(msgspec.json.decode(raw))
    except (ValueError, TypeError) as exc:
        raise SnapshotRejected(f"delta does not decode: {exc}") from None


def checked(config: Config, delta: ConfigDelta) -> Config:
    """``config``, made by applying ``delta`` to a consistent config, when every reference the
    delta touches resolves; SnapshotRejected otherwise."""
    problems = consistency.delta_problems(config, delta)
    if problems:
        raise SnapshotRejected("config fails its consistency check: " + "; ".join(problems))
    return config


def _consistent(config: Config) -> Config:
    problems = consistency.problems(config)
    if problems:
        raise SnapshotRejected("config fails its consistency check: " + "; ".join(problems))
    return config
