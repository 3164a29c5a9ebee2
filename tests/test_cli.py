"""The ``zonegate`` command, run as a real process the way operators and CI scripts run it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import zonegate

DATA = Path(__file__).parent / "data"
ZONEGATE = Path(sys.executable).with_name("zonegate")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ZONEGATE), *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def assert_one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_version() -> None:
    result = run("version")
    assert result.returncode == 0
    assert result.stdout.strip() == zonegate.__version__


def test_parse_accepts_kong_documentation_file() -> None:
    result = run("config", "parse", str(DATA / "kong-docs-full.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("parse successful")
    counts = dict(re.findall(r"^\s+(\w+)\s+(\w+)$", result.stdout, re.MULTILINE))
    assert counts["services"] == "3"
    assert counts["routes"] == "4"
    assert counts["targets"] == "3"
    assert counts["acls"] == "2"
    assert re.fullmatch(r"[0-9a-f]{32}", counts["config_hash"])


def test_parse_reports_every_error_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump(
            {
                "_format_version": "3.0",
                "services": [
                    {"name": "s1", "host": "bad host", "routes": [{"name": "r1"}, {"paths": ["/ok", "x"]}]}
                ],
                "routes": [{"service": "missing", "paths": ["/x"]}],
            }
        )
    )
    result = run("config", "parse", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = [line.strip() for line in result.stderr.strip().splitlines()]
    assert lines[0] == f"error: {bad}: 4 errors"
    assert lines[1:] == [
        "routes[0].service: invalid reference 'service: missing' (no such entry in 'services')",
        "services[0].host: invalid value: bad host",
        "services[0].routes[0]: must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' "
        "when 'protocols' is 'https'",
        "services[0].routes[1].paths[1]: should start with: / (fixed path) or ~/ (regex path)",
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("config", "parse", "/definitely/missing.yml"), "error: /definitely/missing.yml: no such file"),
        (("config", "parse", "/"), "error: /: is a directory, expected a declarative config file"),
        (("config", "parse"), "error: Missing argument 'file'. (see 'zonegate --help')"),
        (("config", "hash"), "error: Missing argument 'file'. (see 'zonegate --help')"),
        (("no-such-command",), "error: No such command 'no-such-command'. (see 'zonegate --help')"),
    ],
)
def test_bad_invocations_give_one_clear_line(args: tuple[str, ...], expected: str) -> None:
    result = run(*args)
    assert result.returncode != 0
    assert assert_one_clean_line(result) == expected


def test_binary_file_is_one_clear_line(tmp_path: Path) -> None:
    blob = tmp_path / "blob.yml"
    blob.write_bytes(b"\xff\xfe\x00garbage")
    result = run("config", "parse", str(blob))
    assert result.returncode == 1
    assert assert_one_clean_line(result) == f"error: {blob}: not a UTF-8 text file"


def test_hash_matches_parse_and_is_stable_across_styles(tmp_path: Path) -> None:
    source = DATA / "kong-docs-full.yaml"
    first = run("config", "hash", str(source))
    assert first.returncode == 0
    digest = first.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", digest)
    assert digest in run("config", "parse", str(source)).stdout
    for style in ("--flat", "--nested"):
        rewritten = tmp_path / f"out{style}.json"
        fmt = run("config", "fmt", style, "--json", str(source))
        assert fmt.returncode == 0, fmt.stderr
        rewritten.write_text(fmt.stdout)
        assert run("config", "hash", str(rewritten)).stdout.strip() == digest


def test_hash_of_empty_config_is_zeros(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yml"
    empty.write_text('_format_version: "3.0"\n')
    result = run("config", "hash", "--parts", str(empty))
    assert result.returncode == 0
    assert '"config_hash": "00000000000000000000000000000000"' in result.stdout


def test_hash_of_invalid_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text('_format_version: "3.0"\nservices:\n- host: "bad host"\n')
    result = run("config", "hash", str(bad))
    assert result.returncode == 1
    assert assert_one_clean_line(result) == (
        f"error: {bad}: invalid declarative config: services[0].host: invalid value: bad host"
    )


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zonegate", "version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert result.stdout.strip() == zonegate.__version__
