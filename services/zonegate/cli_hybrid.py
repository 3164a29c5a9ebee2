"""``zonegate hybrid``: cluster certificates, and ``zonegate nats``: the bus server's configuration.

``zonegate hybrid gen-cert [CERT KEY]`` is Kong's ``kong hybrid gen_cert [<cert> <key>]`` (shared
mode: one self-signed EC P-384 certificate for every node); with ``--ca`` it issues a PKI-mode
certificate for one node instead. ``zonegate hybrid gen-ca`` makes that CA. Neither ever
overwrites a file. ``zonegate nats config`` prints (or writes) the nats-server configuration.

Every failure ends as one ``error: ...`` line and exit status 1, via ``zonegate.cli``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    # Imported inside the commands instead: every ``zonegate`` invocation loads this module, and
    # cryptography costs a twentieth of a second that only these commands need.
    from zonegate.bus import certificates, nats_config

hybrid_app = typer.Typer(
    help="Cluster certificates for the bus (Kong's 'kong hybrid').",
    no_args_is_help=True,
)
nats_app = typer.Typer(help="The NATS server of the bus.", no_args_is_help=True)


def _fail(message: str) -> NoReturn:
    # Imported here: zonegate.cli imports this module to register the sub-apps.
    from zonegate.cli import CliError

    raise CliError(message)


DaysOption = Annotated[
    int | None,
    typer.Option(
        "--days",
        "-d",
        help="Validity in days (default 1095, 3 years, as Kong).",
        show_default=False,
    ),
]
HostOption = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        help="Extra SAN (DNS name or IP address), e.g. for a nats-server; repeatable.",
        show_default=False,
    ),
]


@hybrid_app.command("gen-cert")
def gen_cert(
    cert: Annotated[Path, typer.Argument(help="Certificate file to write.")] = Path("cluster.crt"),
    key: Annotated[Path, typer.Argument(help="Private key file to write (mode 0600).")] = Path("cluster.key"),
    days: DaysOption = None,
    host: HostOption = None,
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca", help="PKI mode: the CA certificate that signs (see gen-ca).", show_default=False
        ),
    ] = None,
    ca_key: Annotated[
        Path | None, typer.Option("--ca-key", help="PKI mode: the CA's private key.", show_default=False)
    ] = None,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="PKI mode: control_plane, data_plane, or server (a nats-server).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="PKI mode: the node's name (CN and SAN).", show_default=False),
    ] = None,
) -> None:
    """Write a cluster certificate and key; never overwrites.

    Without --ca: the shared-mode certificate every node uses (EC P-384, self-signed,
    CN=zonegate_clustering), like 'kong hybrid gen_cert'. With --ca/--ca-key/--role/--name: a
    PKI-mode certificate for one node, signed by the CA.
    """
    from zonegate.bus import certificates
    from zonegate.bus.certificates import CertificateError

    lifetime = certificates.DEFAULT_CERT_DAYS if days is None else days
    hosts = host or []
    try:
        if ca is None:
            for given, option in ((ca_key, "--ca-key"), (role, "--role"), (name, "--name")):
                if given is not None:
                    _fail(f"{option} is for PKI mode and needs --ca (the CA certificate that signs)")
            issued = certificates.generate_cluster_certificate(days=lifetime, hosts=hosts)
        else:
            if ca_key is None:
                _fail("--ca needs --ca-key (the CA's private key)")
            if role is None:
                _fail(f"--ca needs --role ({', '.join(certificates.ISSUED_ROLES)})")
            if role not in certificates.ISSUED_ROLES:
                _fail(f"--role must be one of {', '.join(certificates.ISSUED_ROLES)} (got {role!r})")
            if name is None:
                _fail("--ca needs --name (the node's name, its CN)")
            authority = certificates.load_ca(ca, ca_key)
            issued = certificates.issue_certificate(
                authority, role=role, name=name, hosts=hosts, days=lifetime
            )
        certificates.write_pair(issued, cert, key)
    except CertificateError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {cert} and {key} ({_summary(issued)})")


@hybrid_app.command("gen-ca")
def gen_ca(
    cert: Annotated[Path, typer.Option("--cert", help="CA certificate file to write.")] = Path("ca.crt"),
    key: Annotated[Path, typer.Option("--key", help="CA private key file to write (mode 0600).")] = Path(
        "ca.key"
    ),
    days: Annotated[int, typer.Option("--days", "-d", help="Validity in days.")] = 3650,
    name: Annotated[str, typer.Option("--name", help="The CA's common name.")] = "zonegate cluster CA",
) -> None:
    """Write a PKI-mode CA (EC P-384) that signs node certificates (gen-cert --ca); never overwrites."""
    from zonegate.bus import certificates
    from zonegate.bus.certificates import CertificateError

    try:
        issued = certificates.generate_ca(common_name=name, days=days)
        certificates.write_pair(issued, cert, key)
    except CertificateError as exc:
        _fail(str(exc))
    typer.echo(f"wrote {cert} and {key} ({_summary(issued)})")


def _summary(issued: certificates.Issued) -> str:
    from zonegate.bus import certificates

    expiry = certificates.certificate_expiry(issued.cert)
    return f"EC P-384, {certificates.describe(issued.cert)}, valid until {expiry:%Y-%m-%d}"


# Kong spells it ``kong hybrid gen_cert``: that hand keeps working.
hybrid_app.command("gen_cert", hidden=True)(gen_cert)


# -- zonegate nats config ------------------------------------------------------------------------------


def _gateway(text: str) -> nats_config.Gateway:
    from zonegate.bus import nats_config

    name, sep, urls = text.partition("=")
    if not sep or not name:
        _fail(f"--gateway {text!r} must be NAME=URL[,URL...]")
    return nats_config.Gateway(name=name, urls=tuple(_split(urls)))


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _opt(*names: str, help_text: str) -> Any:
    # Options without a default shown: most are optional and "None" says nothing.
    return typer.Option(*names, help=help_text, show_default=False)


@nats_app.command("config")
def config(
    mode: Annotated[str, _opt("--mode", help_text="shared (one cluster certificate) or pki (a CA).")],
    cert: Annotated[Path, _opt("--cert", help_text="The server's certificate (shared: cluster.crt).")],
    key: Annotated[Path, _opt("--key", help_text="The server's private key.")],
    listen: Annotated[str, _opt("--listen", help_text="Client listener, HOST:PORT.")],
    store_dir: Annotated[Path, _opt("--store-dir", help_text="JetStream storage directory.")],
    ca: Annotated[Path | None, _opt("--ca", help_text="pki: the CA that signs every certificate.")] = None,
    zonegate_cluster: Annotated[
        str,
        _opt(
            "--zonegate-cluster", help_text="The Zonegate cluster_name whose subjects the permissions name."
        ),
    ] = "default",
    server_name: Annotated[str | None, _opt("--server-name", help_text="Unique name of this server.")] = None,
    cluster_name: Annotated[
        str | None, _opt("--cluster-name", help_text="NATS cluster (and gateway) name.")
    ] = None,
    js_domain: Annotated[
        str | None, _opt("--js-domain", help_text="JetStream domain (a region or the hub).")
    ] = None,
    remote_js_domain: Annotated[
        list[str] | None,
        _opt(
            "--remote-js-domain",
            help_text="pki: a domain behind a leaf link data planes may read; repeatable.",
        ),
    ] = None,
    http: Annotated[
        str | None, _opt("--http", help_text="Monitoring HOST:PORT (plain HTTP: keep it on loopback).")
    ] = None,
    routes: Annotated[
        str | None,
        _opt("--routes", help_text="Route URLs of the cluster, comma-separated (this server's too)."),
    ] = None,
    cluster_listen: Annotated[
        str | None, _opt("--cluster-listen", help_text="Route listener HOST:PORT.")
    ] = None,
    gateway_listen: Annotated[
        str | None, _opt("--gateway-listen", help_text="Gateway listener HOST:PORT.")
    ] = None,
    gateway: Annotated[
        list[str] | None, _opt("--gateway", help_text="Another cluster: NAME=URL[,URL...]; repeatable.")
    ] = None,
    leaf_listen: Annotated[
        str | None, _opt("--leaf-listen", help_text="Leaf-node listener HOST:PORT (a hub).")
    ] = None,
    leaf_remote: Annotated[
        list[str] | None,
        _opt("--leaf-remote", help_text="Hub leaf URL to connect to (a region); repeatable."),
    ] = None,
    leaf_cert: Annotated[
        Path | None, _opt("--leaf-cert", help_text="Certificate for --leaf-remote (default --cert).")
    ] = None,
    leaf_key: Annotated[
        Path | None, _opt("--leaf-key", help_text="Key for --leaf-remote (default --key).")
    ] = None,
    output: Annotated[
        Path | None, _opt("--output", "-o", help_text="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the nats-server configuration of the bus: mTLS on every listener, JetStream, and in
    pki mode one user per role with least-privilege permissions. File paths are written as given.
    """
    from zonegate import __version__
    from zonegate.bus import nats_config

    if mode not in nats_config.MODES:
        _fail(f"--mode must be shared or pki (got {mode!r})")
    options = nats_config.NatsConfigOptions(
        mode=mode,  # narrowed to the Literal by the check above
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        listen=listen,
        store_dir=store_dir,
        zonegate_cluster=zonegate_cluster,
        server_name=server_name,
        cluster_name=cluster_name,
        js_domain=js_domain,
        remote_js_domains=tuple(remote_js_domain or ()),
        http=http,
        cluster_listen=cluster_listen,
        routes=tuple(_split(routes)),
        gateway_listen=gateway_listen,
        gateways=tuple(_gateway(text) for text in gateway or ()),
        leaf_listen=leaf_listen,
        leaf_remotes=tuple(
            nats_config.LeafRemote(url, leaf_cert, leaf_key)
            for text in leaf_remote or ()
            for url in _split(text)
        ),
        version=__version__,
    )
    if (leaf_cert is not None or leaf_key is not None) and not options.leaf_remotes:
        _fail("--leaf-cert and --leaf-key are for --leaf-remote")
    try:
        text = nats_config.render(options)
    except nats_config.NatsConfigError as exc:
        _fail(str(exc))
    if output is None:
        typer.echo(text, nl=False)
        return
    temporary = output.with_name(f".{output.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, output)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        _fail(f"{output}: cannot write: {exc.strerror or exc}")
    typer.echo(f"wrote {output} ({mode} mode); check it with: nats-server -t -c {output}")
