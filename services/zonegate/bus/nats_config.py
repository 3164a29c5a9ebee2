"""nats-server configuration for the Zonegate bus (``zonegate nats config``).

Invariants of every rendered file:

- **Every listener requires and verifies a client certificate**: client, cluster routes, leaf
  nodes and gateways all have a ``tls`` block with ``verify: true`` (shared mode, the cluster
  certificate is the only trust anchor) or ``verify_and_map: true`` (pki mode, the CA is). The
  monitoring port (``--http``) is plain HTTP and exempt (nats-server never asks for certificates
  there), so it should stay on loopback.
- **Least privilege in pki mode**: certificates map to one NATS user per role through their role
  identity SAN (``bus/certificates.py``). The control plane may administer JetStream and publish
  config; a data plane may read the config stream and the snapshot object store, publish
  under its own subjects and compare-and-set keys of the rate-limiting KV bucket, nothing else,
  and is explicitly denied (deny wins) the config subjects, the object store's subjects and
  every JetStream API that changes a stream. Routes, gateways and leaf links map only
  ``SERVER_IDENTITY``, so no node certificate can open one.
- **Nobody subscribes to a subject a stream captures** (core NATS; consumers deliver to inboxes).
  Found by test: a data plane may create consumers (it must, to read), and a push consumer
  delivers to whatever subject its creator names as soon as that subject has interest, where a
  stream capturing it stores the copy. So no user may subscribe to ``$O.<bucket>.>`` or to the
  config subjects: data planes hear of a new snapshot on the notify subject (announcements that
  no stream captures) and then read it from the stream.
- ``max_payload`` stays at the NATS default of 1 MiB: snapshots above it go to the object store.

Every subject and stream name comes from ``Names`` (``bus/subjects.py``). ``render`` is pure; the
result is checked by ``nats-server -t`` in the tests, for every mode combination.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from zonegate.bus.subjects import (
    CONTROL_PLANE_IDENTITY,
    DATA_PLANE_IDENTITY,
    SERVER_IDENTITY,
    Names,
    check_token,
    in_domain,
)

Mode = Literal["shared", "pki"]
MODES: Final[tuple[Mode, ...]] = ("shared", "pki")

# Seconds allowed for a TLS handshake. nats-server's default (0.5 s) is short for P-384 handshakes
# on a loaded machine or across regions.
TLS_TIMEOUT: Final = 2.0
_SERVER_NAME_RE: Final = re.compile(r"^[A-Za-z0-9._-]+$")
_HOST_PORT_RE: Final = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]*):(?P<port>[0-9]{1,5})$")

# JetStream API calls that change or remove a stream, its messages or the account: a data plane
# is denied all of them in every domain, whatever its allow list says.
_STREAM_ADMIN_APIS: Final = (
    "STREAM.CREATE.>",
    "STREAM.UPDATE.>",
    "STREAM.DELETE.>",
    "STREAM.PURGE.>",
    "STREAM.MSG.DELETE.>",
    "STREAM.SNAPSHOT.>",
    "STREAM.RESTORE.>",
    "STREAM.PEER.>",
    "STREAM.LEADER.>",
    "CONSUMER.DURABLE.>",
    "CONSUMER.LEADER.>",
    "META.>",
    "SERVER.>",
    "ACCOUNT.>",
)


class NatsConfigError(ValueError):
    """Options that cannot make a working configuration; ``str(error)`` is one line."""


@dataclass(frozen=True, slots=True)
class LeafRemote:
    """An outgoing leaf-node link (this server is a leaf of a hub), with the TLS files it dials with.

    ``cert_file``/``key_file`` default to the server's own; in pki mode that certificate must be a
    ``--role server`` one, which the hub maps to its leaf-node user.
    """

    url: str
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Gateway:
    """Another cluster of a supercluster: its gateway name and URLs."""

    name: str
    urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NatsConfigOptions:
    mode: Mode
    cert_file: Path
    key_file: Path
    listen: str
    store_dir: Path
    ca_file: Path | None = None
    zonegate_cluster: str = "default"
    server_name: str | None = None
    cluster_name: str | None = None
    js_domain: str | None = None
    # JetStream domains reached through leaf links (the hub's, seen from a region) whose read-only
    # API a data plane connected here may also use.
    remote_js_domains: tuple[str, ...] = ()
    http: str | None = None
    cluster_listen: str | None = None
    routes: tuple[str, ...] = ()
    gateway_listen: str | None = None
    gateways: tuple[Gateway, ...] = ()
    leaf_listen: str | None = None
    leaf_remotes: tuple[LeafRemote, ...] = ()
    version: str = ""

    @property
    def trust_file(self) -> Path:
        """The CA file every listener verifies peers with: the cluster certificate itself in shared mode."""
        if self.mode == "shared":
            return self.cert_file
        assert self.ca_file is not None
        return self.ca_file


# -- checks -------------------------------------------------------------------------------------------


def check(options: NatsConfigOptions) -> None:
    """Raise ``NatsConfigError`` for the first option that cannot work."""
    o = options
    if o.mode not in MODES:
        raise NatsConfigError(f"--mode must be shared or pki (got {o.mode!r})")
    if o.mode == "pki" and o.ca_file is None:
        raise NatsConfigError("--ca is required in pki mode (the CA that signs every node and server)")
    if o.mode == "shared" and o.ca_file is not None:
        raise NatsConfigError("--ca is only for pki mode; shared mode trusts the cluster certificate itself")
    _token(o.zonegate_cluster, "--zonegate-cluster")
    _host_port(o.listen, "--listen")
    if o.http is not None:
        _host_port(o.http, "--http")
    if o.server_name is not None and not _SERVER_NAME_RE.match(o.server_name):
        raise NatsConfigError(f"--server-name {o.server_name!r} must use only letters, digits, '.', '-', '_'")
    if o.cluster_name is not None:
        _token(o.cluster_name, "--cluster-name")
    if o.js_domain is not None:
        _token(o.js_domain, "--js-domain")
    if o.mode == "shared" and o.remote_js_domains:
        raise NatsConfigError("--remote-js-domain is for pki mode; shared mode has no per-role permissions")
    for domain in o.remote_js_domains:
        _token(domain, "--remote-js-domain")
        if domain == o.js_domain:
            raise NatsConfigError(f"--remote-js-domain {domain} is this server's own --js-domain")
    if o.routes and o.cluster_listen is None:
        raise NatsConfigError("--routes needs --cluster-listen (routes are dialled from the cluster port)")
    if o.cluster_listen is not None:
        _host_port(o.cluster_listen, "--cluster-listen")
        if o.cluster_name is None:
            raise NatsConfigError(
                "--cluster-listen needs --cluster-name (every server of a cluster shares it)"
            )
        if o.server_name is None:
            raise NatsConfigError(
                "--cluster-listen needs --server-name (JetStream clustering needs unique names)"
            )
        if not o.routes:
            # nats-server -t accepts it, but JetStream then refuses to start ("JetStream cluster
            # requires configured routes"); listing this server itself is fine.
            raise NatsConfigError(
                "--cluster-listen needs --routes (every server of the cluster, this one included)"
            )
    for url in o.routes:
        _url(url, "--routes", ("nats-route", "nats", "tls"))
    if o.gateways and o.gateway_listen is None:
        raise NatsConfigError("--gateway needs --gateway-listen")
    if o.gateway_listen is not None:
        _host_port(o.gateway_listen, "--gateway-listen")
        if o.cluster_listen is None:
            # Same JetStream start-up failure as above: a gateway makes the server clustered.
            raise NatsConfigError("--gateway-listen needs --cluster-listen and --routes")
    for gateway in o.gateways:
        _token(gateway.name, "--gateway name")
        if not gateway.urls:
            raise NatsConfigError(f"--gateway {gateway.name} needs at least one URL")
        for url in gateway.urls:
            _url(url, "--gateway", ("nats", "tls"))
    if o.leaf_listen is not None:
        _host_port(o.leaf_listen, "--leaf-listen")
    for remote in o.leaf_remotes:
        _url(remote.url, "--leaf-remote", ("nats-leaf", "nats", "tls"))
        if (remote.cert_file is None) != (remote.key_file is None):
            raise NatsConfigError("--leaf-cert and --leaf-key must be given together")
    if o.leaf_listen is not None or o.leaf_remotes:
        if o.js_domain is None:
            # Both ends of a leaf link run JetStream; without distinct domains both would answer $JS.API.
            raise NatsConfigError("leaf nodes need --js-domain (each side of a leaf link has its own domain)")
        if o.server_name is None:
            # JetStream over a leaf link stops flowing after a restart under a new random name
            # (nats-io/nats-server issue 3024).
            raise NatsConfigError("leaf nodes need --server-name (a name that survives restarts)")


def _token(value: str, what: str) -> str:
    try:
        return check_token(value, what)
    except ValueError as exc:
        raise NatsConfigError(str(exc)) from None


def _host_port(value: str, what: str) -> str:
    match = _HOST_PORT_RE.match(value)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise NatsConfigError(f"{what} {value!r} must be HOST:PORT (port 1-65535)")
    return value


def _url(value: str, what: str, schemes: Sequence[str]) -> str:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        port = None
        parts = None
    if parts is None or parts.scheme not in schemes or not parts.hostname or port is None:
        raise NatsConfigError(
            f"{what} {value!r} must be a URL like {schemes[0]}://HOST:PORT (scheme {', '.join(schemes)})"
        )
    if parts.username or parts.password:
        raise NatsConfigError(f"{what} {value!r}: no credentials in URLs, the certificate authenticates")
    return value


# -- permissions --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Permissions:
    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    allow_responses: bool = False


def api_prefixes(domains: Iterable[str | None]) -> list[str]:
    """``$JS.API`` and ``$JS.<domain>.API`` for every domain given (None: the local API only)."""
    prefixes = ["$JS.API"]
    for domain in domains:
        if domain is not None and f"$JS.{domain}.API" not in prefixes:
            prefixes.append(f"$JS.{domain}.API")
    return prefixes


def control_plane_permissions(names: Names) -> Permissions:
    """The control plane administers JetStream (config stream, object store, region mirrors in any
    domain) and publishes config; it reads what data planes send (as a queue group or not)."""
    bucket_subjects = f"$O.{names.snapshot_bucket}.>"
    return Permissions(
        publish_allow=(
            names.config_wildcard,
            names.notify_wildcard,
            bucket_subjects,
            "$JS.API.>",
            "$JS.*.API.>",  # mirrors and sources in the regions' domains
            "$JS.ACK.>",
            "$JS.FC.>",
        ),
        # Not the config subjects nor the object store's: it reads its streams through the API, and
        # each subscription there is interest a misdirected push consumer could use (module docstring).
        subscribe_allow=(names.data_plane_wildcard, "_INBOX.>"),
        allow_responses=True,
    )


def data_plane_permissions(names: Names, domains: Sequence[str | None] = (None,)) -> Permissions:
    """Read the config stream and the snapshot object store, publish under the data-plane subjects,
    and count in the rate-limiting bucket.

    Reading means: stream info, message get (nats-py's default ``get_last_msg``), direct get, and
    ephemeral consumers (the ordered consumers of a watch and of ``ObjectStore.get``), with their
    flow-control replies and acks; stream names, because nats-py finds an object store's stream by
    subject. The deny list repeats, for every domain (``$JS.*.API``), what must never be allowed.
    """
    streams = (names.config_stream, names.snapshot_object_stream)
    allow: list[str] = [names.data_plane_wildcard]
    for prefix in api_prefixes(domains):
        allow += [f"{prefix}.INFO", f"{prefix}.STREAM.NAMES"]
        for stream in streams:
            allow += [
                f"{prefix}.STREAM.INFO.{stream}",
                f"{prefix}.STREAM.MSG.GET.{stream}",
                f"{prefix}.DIRECT.GET.{stream}",
                f"{prefix}.DIRECT.GET.{stream}.>",
                f"{prefix}.CONSUMER.CREATE.{stream}",
                f"{prefix}.CONSUMER.CREATE.{stream}.>",
                f"{prefix}.CONSUMER.INFO.{stream}.*",
                f"{prefix}.CONSUMER.DELETE.{stream}.*",
            ]
    for stream in streams:
        allow += [f"$JS.FC.{stream}.>", f"$JS.ACK.{stream}.>"]
    # rate-limiting's cluster counters: compare-and-set publishes on the bucket's keys and direct
    # gets of one key; no consumer, no stream API (the control plane creates the bucket). A region's
    # data plane writes to the hub's bucket as $JS.<hub>.API.$KV.<bucket>.<key> (subjects.in_domain).
    allow.append(names.ratelimit_wildcard)
    allow += [in_domain(names.ratelimit_wildcard, domain) for domain in dict.fromkeys(domains) if domain]
    allow += [f"{prefix}.DIRECT.GET.{names.ratelimit_stream}.>" for prefix in api_prefixes(domains)]
    deny: list[str] = [names.config_wildcard, f"$O.{names.snapshot_bucket}.>"]
    for prefix in ("$JS.API", "$JS.*.API"):
        deny += [f"{prefix}.{api}" for api in _STREAM_ADMIN_APIS]
    return Permissions(
        publish_allow=tuple(allow),
        publish_deny=tuple(deny),
        # Announcements only. Never the config or object-store subjects: a subscription there
        # would give interest to a push consumer aimed at them (module docstring), and the stream
        # would capture what it delivered; so they are denied outright.
        subscribe_allow=(names.notify_wildcard, "_INBOX.>"),
        subscribe_deny=(names.config_wildcard, f"$O.{names.snapshot_bucket}.>"),
    )


# -- rendering ----------------------------------------------------------------------------------------


def _q(value: str | Path) -> str:
    # JSON strings are valid NATS config strings, and quoting keeps '$' subjects from being read
    # as variable references.
    return json.dumps(str(value))


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _long_list(w: _Writer, head: str, values: Sequence[str]) -> None:
    # One subject per line: permission lists are read and reviewed by people.
    w.open(head, "[")
    for value in values:
        w.line(_q(value))
    w.close()


class _Writer:
    """Indented lines; ``open``/``close`` a map (``{}``) or a list (``[]``)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closers: list[str] = []

    def line(self, text: str = "") -> None:
        self.lines.append(("  " * len(self.closers) + text) if text else "")

    def open(self, head: str = "", bracket: Literal["{", "["] = "{") -> None:
        self.line(f"{head} {bracket}" if head else bracket)
        self.closers.append("}" if bracket == "{" else "]")

    def close(self) -> None:
        closer = self.closers.pop()
        self.line(closer)

    def text(self) -> str:
        assert not self.closers, "unclosed block"
        return "\n".join(self.lines) + "\n"


def _tls(w: _Writer, o: NatsConfigOptions, *, cert: Path | None = None, key: Path | None = None) -> None:
    w.open("tls")
    w.line(f"cert_file: {_q(cert or o.cert_file)}")
    w.line(f"key_file: {_q(key or o.key_file)}")
    w.line(f"ca_file: {_q(o.trust_file)}")
    w.line("verify_and_map: true" if o.mode == "pki" else "verify: true")
    w.line(f"timeout: {TLS_TIMEOUT}")
    w.close()


def _remote_tls(w: _Writer, o: NatsConfigOptions, remote: LeafRemote) -> None:
    # The dialling side: present our certificate, verify the hub's against the same trust anchor.
    w.open("tls")
    w.line(f"cert_file: {_q(remote.cert_file or o.cert_file)}")
    w.line(f"key_file: {_q(remote.key_file or o.key_file)}")
    w.line(f"ca_file: {_q(o.trust_file)}")
    w.line(f"timeout: {TLS_TIMEOUT}")
    w.close()


def _permissions(w: _Writer, p: Permissions) -> None:
    w.open("permissions")
    w.open("publish")
    _long_list(w, "allow:", p.publish_allow)
    if p.publish_deny:
        _long_list(w, "deny:", p.publish_deny)
    w.close()
    w.open("subscribe")
    _long_list(w, "allow:", p.subscribe_allow)
    if p.subscribe_deny:
        _long_list(w, "deny:", p.subscribe_deny)
    w.close()
    if p.allow_responses:
        w.line("allow_responses: true")
    w.close()


def render(options: NatsConfigOptions) -> str:
    """The nats-server configuration file for ``options`` (checked first: ``NatsConfigError``)."""
    check(options)
    o = options
    names = Names(o.zonegate_cluster)
    w = _Writer()
    version = f" {o.version}" if o.version else ""
    w.line(f"# nats-server configuration for the Zonegate{version} bus")
    w.line(f"# ({o.mode} mode, zonegate cluster {names.cluster!r}).")
    w.line("# Generated by `zonegate nats config`; check it with `nats-server -t -c FILE`.")
    w.line("#")
    w.line("# max_payload is left at the NATS default, 1 MiB: a snapshot larger than that goes to the")
    w.line(f"# object store {names.snapshot_bucket} and the config message carries a reference.")
    w.line()
    if o.server_name is not None:
        w.line(f"server_name: {_q(o.server_name)}")
    w.line(f"listen: {_q(o.listen)}")
    if o.http is not None:
        w.line("# Monitoring is plain HTTP and never asks for a client certificate: keep it on loopback.")
        w.line(f"http: {_q(o.http)}")
    w.line()
    w.open("jetstream")
    w.line(f"store_dir: {_q(o.store_dir)}")
    if o.js_domain is not None:
        w.line(f"domain: {_q(o.js_domain)}")
    w.close()
    w.line()
    if o.mode == "pki":
        w.line("# Client certificates must be signed by the CA and are mapped to a user by their SAN DNS")
        w.line(f"# names: {CONTROL_PLANE_IDENTITY} or {DATA_PLANE_IDENTITY}; any other is refused.")
    else:
        w.line("# Shared mode: the cluster certificate is every node's certificate and the only one trusted.")
    _tls(w, o)
    if o.mode == "pki":
        w.line()
        _authorization(w, o, names)
    if o.cluster_listen is not None:
        w.line()
        _cluster(w, o)
    if o.gateway_listen is not None:
        w.line()
        _gateway(w, o)
    if o.leaf_listen is not None or o.leaf_remotes:
        w.line()
        _leafnodes(w, o)
    return w.text()


def _authorization(w: _Writer, o: NatsConfigOptions, names: Names) -> None:
    dp_domains: list[str | None] = [None, o.js_domain, *o.remote_js_domains]
    w.open("authorization")
    w.open("users =", "[")
    w.open()
    w.line(f"user: {_q(CONTROL_PLANE_IDENTITY)}")
    _permissions(w, control_plane_permissions(names))
    w.close()
    w.open()
    w.line(f"user: {_q(DATA_PLANE_IDENTITY)}")
    _permissions(w, data_plane_permissions(names, dp_domains))
    w.close()
    w.close()
    w.close()


def _server_only(w: _Writer, what: str) -> None:
    w.line(f"# Only nats-server certificates (SAN DNS {SERVER_IDENTITY}, verify_and_map) may {what}.")


def _cluster(w: _Writer, o: NatsConfigOptions) -> None:
    assert o.cluster_name is not None
    w.open("cluster")
    w.line(f"name: {_q(o.cluster_name)}")
    w.line(f"listen: {_q(o.cluster_listen or '')}")
    _tls(w, o)
    if o.mode == "pki":
        _server_only(w, "open a route")
        w.open("authorization")
        w.line(f"user: {_q(SERVER_IDENTITY)}")
        w.close()
    if o.routes:
        w.line(f"routes: {_list(o.routes)}")
    w.close()


def _gateway(w: _Writer, o: NatsConfigOptions) -> None:
    assert o.cluster_name is not None
    w.open("gateway")
    w.line(f"name: {_q(o.cluster_name)}")
    w.line(f"listen: {_q(o.gateway_listen or '')}")
    _tls(w, o)
    if o.mode == "pki":
        _server_only(w, "open a gateway connection")
        w.open("authorization")
        w.line(f"user: {_q(SERVER_IDENTITY)}")
        w.close()
    if o.gateways:
        w.open("gateways:", "[")
        for gateway in o.gateways:
            w.line(f"{{ name: {_q(gateway.name)}, urls: {_list(gateway.urls)} }}")
        w.close()
    w.close()


def _leafnodes(w: _Writer, o: NatsConfigOptions) -> None:
    w.open("leafnodes")
    if o.leaf_listen is not None:
        w.line(f"listen: {_q(o.leaf_listen)}")
        _tls(w, o)
        if o.mode == "pki":
            w.line(
                "# Only nats-server certificates (SAN DNS "
                + SERVER_IDENTITY
                + ") may connect as a leaf node."
            )
            w.open("authorization")
            w.line(f"users = [ {{ user: {_q(SERVER_IDENTITY)} }} ]")
            w.close()
    if o.leaf_remotes:
        w.open("remotes =", "[")
        for remote in o.leaf_remotes:
            w.open()
            w.line(f"url: {_q(remote.url)}")
            _remote_tls(w, o, remote)
            w.close()
        w.close()
    w.close()
