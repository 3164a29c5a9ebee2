"""``zonegate hybrid gen-cert`` / ``gen-ca`` and ``zonegate nats config``, run as real processes."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zonegate.bus import certificates
from zonegate.bus.subjects import CONTROL_PLANE_IDENTITY, DATA_PLANE_IDENTITY, SERVER_IDENTITY
from zonegate.cli import main
from zonegate.embedded.nats_server import find_nats_server

ZONEGATE = Path(sys.executable).with_name("zonegate")


def run(*args: str, cwd: Path, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ZONEGATE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
        # The child's umask must not widen (or narrow) the key's mode: 0600, whatever it is.
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def main_error(args: list[str], cwd: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``zonegate ARGS`` in this process (the console script's own main()); its one error line.

    For the many error cases: a process per case costs half a second on a loaded machine.
    """
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with pytest.raises(SystemExit) as exited:
            main(args)
    finally:
        os.chdir(previous)
    assert exited.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def ekus(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def test_gen_cert_writes_kongs_defaults(tmp_path: Path) -> None:
    result = run("hybrid", "gen-cert", cwd=tmp_path, umask=0)
    assert result.returncode == 0, result.stderr
    cert_path, key_path = tmp_path / "cluster.crt", tmp_path / "cluster.key"
    assert "cluster.crt" in result.stdout and "cluster.key" in result.stdout
    assert mode_of(key_path) == 0o600
    assert mode_of(cert_path) == 0o644
    cert = load(cert_path)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    assert certificates.key_matches(cert, key)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "zonegate_clustering"
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert (
        dt.timedelta(days=1094)
        < lifetime
        <= dt.timedelta(days=certificates.DEFAULT_CERT_DAYS)
        == dt.timedelta(days=1095)
    )
    # Server, client and trust anchor in one: what nats-server (Go) and OpenSSL need for each.
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_cert_sign
    assert ekus(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    dns, _ips = sans(cert)
    assert "zonegate_clustering" in dns
    cert.verify_directly_issued_by(cert)  # self-signed
    assert certificates.certificate_role(cert) is None


def test_gen_cert_takes_paths_days_and_kongs_spelling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(
        "hybrid", "gen_cert", "a.crt", "a.key", "--days", "30", "--host", "nats.internal", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    cert = load(tmp_path / "a.crt")
    lifetime = certificates.certificate_expiry(cert) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29) < lifetime <= dt.timedelta(days=30)
    assert "nats.internal" in sans(cert)[0]
    assert main_error(["hybrid", "gen-cert", "b.crt", "b.key", "-d", "0"], tmp_path, capsys).endswith(
        "(got 0)"
    )
    assert not (tmp_path / "b.crt").exists() and not (tmp_path / "b.key").exists()


def test_gen_cert_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("hybrid", "gen-cert", cwd=tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    line = one_error_line(run("hybrid", "gen-cert", cwd=tmp_path))
    assert "already exists" in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # Only the key exists: nothing is written, the certificate is not created next to a stranger's key.
    (tmp_path / "cluster.crt").unlink()
    assert "cluster.key already exists" in main_error(["hybrid", "gen-cert"], tmp_path, capsys)
    assert not (tmp_path / "cluster.crt").exists()


def test_pki_issues_certificates_with_roles(tmp_path: Path) -> None:
    assert run("hybrid", "gen-ca", cwd=tmp_path).returncode == 0
    ca = load(tmp_path / "ca.crt")
    assert mode_of(tmp_path / "ca.key") == 0o600
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = ca.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=3649) < lifetime <= dt.timedelta(days=certificates.DEFAULT_CA_DAYS)
    assert certificates.common_name(ca) == certificates.DEFAULT_CA_COMMON_NAME

    pki = ["--ca", "ca.crt", "--ca-key", "ca.key"]
    for role, name, identity in (
        ("control_plane", "cp1", CONTROL_PLANE_IDENTITY),
        ("data_plane", "dp1", DATA_PLANE_IDENTITY),
    ):
        result = run(
            "hybrid",
            "gen-cert",
            *pki,
            "--role",
            role,
            "--name",
            name,
            f"{name}.crt",
            f"{name}.key",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert mode_of(tmp_path / f"{name}.key") == 0o600
        cert = load(tmp_path / f"{name}.crt")
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role
        assert sans(cert)[0] == [name, identity]
        assert ekus(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert certificates.certificate_role(cert) == role
        assert certificates.check_node_certificate(cert, ca) == role

    result = run(
        "hybrid", "gen-cert", *pki, "--role", "server", "--name", "nats-1",
        "--host", "127.0.0.1", "--host", "nats-1.internal", "server.crt", "server.key", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    server = load(tmp_path / "server.crt")
    dns, ips = sans(server)
    assert dns == ["nats-1", "nats-1.internal", SERVER_IDENTITY] and ips == ["127.0.0.1"]
    assert ekus(server) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert certificates.certificate_role(server) is None  # not a node: no client user maps to it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "data_plane", "--name", "dp1"], "--role is for PKI mode and needs --ca"),
        (["--ca", "ca.crt", "--role", "data_plane", "--name", "dp1"], "--ca needs --ca-key"),
        (["--ca", "ca.crt", "--ca-key", "ca.key", "--name", "dp1"], "--ca needs --role"),
        (["--ca", "ca.crt", "--ca-key", "ca.key", "--role", "admin", "--name", "x"], "--role must be one of"),
        (["--ca", "ca.crt", "--ca-key", "ca.key", "--role", "data_plane"], "--ca needs --name"),
        # A data plane named after the control-plane identity would map to the control-plane user.
        (
            [
                "--ca",
                "ca.crt",
                "--ca-key",
                "ca.key",
                "--role",
                "data_plane",
                "--name",
                CONTROL_PLANE_IDENTITY,
            ],
            "is reserved for a role identity",
        ),
        (
            ["--ca", "ca.crt", "--ca-key", "ca.key", "--role", "data_plane", "--name", "dp", "--host", "a b"],
            "--host 'a b' is neither an IP address nor a DNS name",
        ),
        (
            ["--ca", "missing.crt", "--ca-key", "ca.key", "--role", "data_plane", "--name", "dp"],
            "no such file",
        ),
        (
            ["--ca", "ca.crt", "--ca-key", "other.key", "--role", "data_plane", "--name", "dp"],
            "does not match",
        ),
        (["--ca", "other.crt", "--ca-key", "other.key", "--role", "data_plane", "--name", "dp"], "not a CA"),
        (
            [
                "--ca",
                "ca.crt",
                "--ca-key",
                "ca.key",
                "--role",
                "data_plane",
                "--name",
                "dp",
                "--days",
                "4000",
            ],
            "would outlive the CA",
        ),
    ],
)
def test_gen_cert_errors_are_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = certificates.generate_ca()
    certificates.write_pair(ca, tmp_path / "ca.crt", tmp_path / "ca.key")
    # "other": a valid key pair whose certificate is not a CA (and does not match ca.key).
    leaf = certificates.issue_certificate(ca, role="data_plane", name="leaf")
    certificates.write_pair(leaf, tmp_path / "other.crt", tmp_path / "other.key")
    assert message in main_error(["hybrid", "gen-cert", *args, "out.crt", "out.key"], tmp_path, capsys)
    assert not (tmp_path / "out.crt").exists() and not (tmp_path / "out.key").exists()


def test_nats_config_prints_or_writes_a_valid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("hybrid", "gen-cert", cwd=tmp_path).returncode == 0
    args = ["nats", "config", "--mode", "shared", "--cert", "cluster.crt", "--key", "cluster.key"]
    args += ["--listen", "127.0.0.1:4222", "--store-dir", str(tmp_path / "js")]
    printed = run(*args, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "verify: true" in printed.stdout
    written = run(*args, "-o", "nats.conf", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "nats.conf").read_text() == printed.stdout
    check = subprocess.run(
        [str(find_nats_server()), "-t", "-c", "nats.conf"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    pki = [a if a != "shared" else "pki" for a in args]
    assert "--ca is required in pki mode" in main_error(pki, tmp_path, capsys)
    mixed = [a if a != "shared" else "mixed" for a in args]
    assert "--mode must be shared or pki" in main_error(mixed, tmp_path, capsys)
    assert "--gateway 'x' must be NAME=URL" in main_error([*args, "--gateway", "x"], tmp_path, capsys)
