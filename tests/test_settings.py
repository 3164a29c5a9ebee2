"""Tests for zonegate.settings: sources, casting, one-line errors, cross-setting rules."""

import dataclasses
import ipaddress
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonegate.settings import (
    SETTING_SPECS,
    Listen,
    Settings,
    SettingsError,
    check_settings,
    conf_path_from_env,
    env_name,
    load_settings,
    parse_conf,
)

DP = {"ZONEGATE_ROLE": "data_plane", "ZONEGATE_DATABASE": "off"}
CP = {"ZONEGATE_ROLE": "control_plane"}


def load_error(environ: Mapping[str, str], conf_path: Path | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(environ, conf_path)
    message = str(info.value)
    assert "\n" not in message
    return message


def write_conf(tmp_path: Path, text: str) -> Path:
    conf = tmp_path / "zonegate.conf"
    conf.write_text(text, encoding="utf-8")
    return conf


# ---- the table and the dataclass ---------------------------------------------------------------


def test_spec_table_and_dataclass_fields_agree() -> None:
    assert [spec.name for spec in SETTING_SPECS] == [f.name for f in dataclasses.fields(Settings)]


def _conforms(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin is typing.Literal:
        return value in args
    if origin in (types.UnionType, typing.Union):
        return any(_conforms(value, arg) for arg in args)
    if origin is tuple:
        assert args[1] is Ellipsis
        return isinstance(value, tuple) and all(_conforms(item, args[0]) for item in value)
    if origin is Mapping:
        return isinstance(value, Mapping) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, float)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


SAMPLE_ENV = {
    # a value for every optional setting, so its "set" type is checked too
    "ZONEGATE_DECLARATIVE_CONFIG": "kong.yaml",
    "ZONEGATE_ADMIN_TOKEN": "t0ken",
    "ZONEGATE_TRUSTED_IPS": "10.0.0.0/8, ::1",
    "ZONEGATE_PG_PASSWORD": "pw",
    "ZONEGATE_PG_DSN": "postgresql://u@h/db",
    "ZONEGATE_CLUSTER_CERT": "cluster.crt",
    "ZONEGATE_CLUSTER_CERT_KEY": "cluster.key",
    "ZONEGATE_CLUSTER_CA_CERT": "ca.crt",
    "ZONEGATE_CLUSTER_SERVER_NAME": "cp.example.com",
    "ZONEGATE_CLUSTER_DP_LABELS": "deployment:local",
    "ZONEGATE_CLUSTER_JS_DOMAIN": "eu",
    "ZONEGATE_PROXY_ACCESS_LOG": "off",
    **DP,
}


@pytest.mark.parametrize("environ", [{}, SAMPLE_ENV], ids=["defaults", "all-set"])
def test_every_value_has_the_declared_field_type(environ: dict[str, str]) -> None:
    loaded = load_settings(environ, None)
    hints = typing.get_type_hints(Settings)
    wrong = {
        name: getattr(loaded, name) for name in hints if not _conforms(getattr(loaded, name), hints[name])
    }
    assert wrong == {}


def test_specs_have_descriptions_and_unique_names() -> None:
    names = [spec.name for spec in SETTING_SPECS]
    assert len(names) == len(set(names))
    assert all(spec.description and spec.caster.kind for spec in SETTING_SPECS)
    by_name = {spec.name: spec for spec in SETTING_SPECS}
    assert by_name["workers"].kong_name == "nginx_worker_processes"
    assert by_name["cluster_nats_url"].kong_name is None
    assert by_name["proxy_listen"].kong_name == "proxy_listen"
    assert by_name["pg_password"].env_name == "ZONEGATE_PG_PASSWORD"
    assert {spec.name for spec in SETTING_SPECS if spec.sensitive} == {"admin_token", "pg_password", "pg_dsn"}


# ---- defaults --------------------------------------------------------------------------------


def test_defaults_when_nothing_is_set() -> None:
    s = load_settings({}, None)
    assert s.role == "traditional"
    assert s.database == "postgres"
    assert s.prefix == Path.cwd() / ".zonegate"
    assert s.prefix.is_absolute()
    assert (s.log_level, s.log_format) == ("info", "console")
    assert s.workers == (os.cpu_count() or 1)  # Kong's default: one worker per CPU
    assert s.plugins == ("bundled",)
    assert s.declarative_config is None
    assert s.headers == ("server_tokens", "latency_tokens")
    assert s.admin_token is None
    assert s.proxy_listen == (Listen("0.0.0.0", 8000), Listen("0.0.0.0", 8443, ssl=True))
    assert s.admin_listen == (Listen("127.0.0.1", 8001), Listen("127.0.0.1", 8444, ssl=True))
    assert s.admin_gui_listen == (Listen("0.0.0.0", 8002), Listen("0.0.0.0", 8445, ssl=True))
    assert s.status_listen == (Listen("127.0.0.1", 8100),)
    assert s.proxy_access_log == Path("logs/access.log")
    assert s.proxy_error_log == Path("logs/error.log")
    assert (s.real_ip_header, s.real_ip_recursive, s.trusted_ips) == ("X-Real-IP", False, ())
    assert s.client_max_body_size == 0
    assert s.max_request_header_size == 32 * 1024
    assert s.max_request_headers == 100
    assert s.upstream_keepalive_pool_size == 512
    assert s.upstream_keepalive_max_requests == 10000
    assert s.upstream_keepalive_idle_timeout == 60.0
    assert (s.client_header_timeout, s.client_body_timeout, s.keepalive_timeout) == (60.0, 60.0, 60.0)
    assert (s.pg_host, s.pg_port, s.pg_user, s.pg_password) == ("127.0.0.1", 5432, "zonegate", None)
    assert (s.pg_database, s.pg_ssl, s.pg_timeout, s.pg_dsn) == ("zonegate", False, 5000, None)
    assert s.cluster_mtls == "shared"
    assert (s.cluster_cert, s.cluster_cert_key, s.cluster_ca_cert, s.cluster_server_name) == (None,) * 4
    assert dict(s.cluster_dp_labels) == {}
    assert s.cluster_data_plane_purge_delay == 1209600
    assert s.cluster_nats_url == ("tls://127.0.0.1:4222",)
    assert (s.cluster_name, s.cluster_js_domain, s.cluster_snapshot_history) == ("default", None, 10)
    assert (s.cluster_hub_js_domain, s.cluster_js_replicas) == (None, 1)
    assert s.data_plane_cache_encryption is False
    assert s.lmdb_environment_path == Path("dbless.lmdb")
    assert s.lmdb_map_size == 2048 * 1024 * 1024
    assert s.db_update_frequency == 5.0


def test_non_zonegate_environment_is_ignored() -> None:
    s = load_settings({"PATH": "/usr/bin", "KONG_ROLE": "data_plane", "zonegate_role": "data_plane"}, None)
    assert s.role == "traditional"


# ---- sources and precedence ---------------------------------------------------------------------


def test_environment_overrides_file_overrides_default(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "pg_host = db.internal\npg_port = 6543\n")
    s = load_settings({"ZONEGATE_PG_PORT": "7000"}, conf)
    assert s.pg_host == "db.internal"  # file over default
    assert s.pg_port == 7000  # environment over file
    assert s.pg_user == "zonegate"  # default


def test_only_the_winning_value_is_cast(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "pg_port = not-a-port\n")
    assert load_settings({"ZONEGATE_PG_PORT": "5433"}, conf).pg_port == 5433


def test_empty_environment_value_unsets_an_optional_setting(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "pg_password = from-file\n")
    assert load_settings({}, conf).pg_password == "from-file"
    assert load_settings({"ZONEGATE_PG_PASSWORD": ""}, conf).pg_password is None


def test_conf_file_syntax(tmp_path: Path) -> None:
    conf = write_conf(
        tmp_path,
        "# a comment\n"
        "\n"
        "   PG_Host=db.example.com   # trailing comment\n"
        "pg_password = s3cr\\#t#not part of it\n"
        "  # indented comment\n"
        "pg_user =\tkong   \n"
        "pg_database = a=b\n",
    )
    s = load_settings({}, conf)
    assert s.pg_host == "db.example.com"
    assert s.pg_password == "s3cr#t"
    assert s.pg_user == "kong"
    assert s.pg_database == "a=b"


def test_conf_file_with_bom_and_crlf(tmp_path: Path) -> None:
    conf = tmp_path / "zonegate.conf"
    conf.write_bytes("\ufeffpg_host = h1\r\npg_port = 1234\r\n".encode())
    s = load_settings({}, conf)
    assert (s.pg_host, s.pg_port) == ("h1", 1234)


def test_parse_conf_reports_lines() -> None:
    assert parse_conf("\n# x\nrole = data_plane\n\nDATABASE = off # c\n", "f.conf") == {
        "role": ("data_plane", 3),
        "database": ("off", 5),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("role data_plane\n", "invalid line in {path} line 1: expected name = value"),
        ("# ok\n= x\n", "invalid line in {path} line 2: expected name = value"),
        ("pg-host = x\n", "invalid line in {path} line 1: expected name = value"),
        ("role = a\n\nROLE = b\n", "setting 'role' is set twice in {path} (lines 1 and 3)"),
    ],
)
def test_conf_file_syntax_errors(tmp_path: Path, text: str, message: str) -> None:
    conf = write_conf(tmp_path, text)
    assert load_error({}, conf) == message.format(path=conf)


def test_missing_conf_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    assert load_error({}, missing) == f"conf file not found: {missing}"


def test_unreadable_conf_files(tmp_path: Path) -> None:
    assert load_error({}, tmp_path).startswith(f"cannot read conf file {tmp_path}: ")
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"role = \xff\xfe\n")
    assert load_error({}, binary) == f"cannot read conf file {binary}: not valid UTF-8"


def test_conf_path_from_env() -> None:
    assert conf_path_from_env({"ZONEGATE_CONF": "/etc/zonegate.conf"}) == Path("/etc/zonegate.conf")
    assert conf_path_from_env({"ZONEGATE_CONF": "  "}) is None
    assert conf_path_from_env({}) is None


def test_conf_and_test_variables_are_not_settings(tmp_path: Path) -> None:
    environ = {"ZONEGATE_CONF": str(tmp_path / "missing.conf"), "ZONEGATE_TEST_PG": "x", **DP}
    assert load_settings(environ, None).role == "data_plane"  # the conf path is the CLI's business


@st.composite
def conf_values(draw: st.DrawFn) -> str:
    alphabet = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\\")
    return draw(st.text(alphabet, max_size=30)).strip()


@given(conf_values())
def test_escaped_hash_round_trips_through_the_conf_format(value: str) -> None:
    escaped = value.replace("#", "\\#")
    assert parse_conf(f"pg_password = {escaped}  # comment\n", "x.conf")["pg_password"].value == value


# ---- unknown settings ----------------------------------------------------------------------------


def test_unknown_environment_setting_with_suggestion() -> None:
    assert load_error({"ZONEGATE_PROXY_LISEN": "x"}) == (
        "unknown setting ZONEGATE_PROXY_LISEN (did you mean ZONEGATE_PROXY_LISTEN?)"
    )


def test_unknown_environment_setting_without_suggestion() -> None:
    assert load_error({"ZONEGATE_FOO": "1"}) == "unknown setting ZONEGATE_FOO"


def test_environment_names_are_upper_case() -> None:
    assert load_error({"ZONEGATE_pg_host": "x"}) == (
        "unknown setting ZONEGATE_pg_host (did you mean ZONEGATE_PG_HOST?)"
    )


def test_unknown_file_setting_with_suggestion(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "# header\nrole = traditional\n\nproxy_lisen = 0.0.0.0:8000\n")
    assert load_error({}, conf) == (
        f"unknown setting 'proxy_lisen' in {conf} line 4 (did you mean 'proxy_listen'?)"
    )


def test_unknown_file_setting_without_suggestion(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "zzz = 1\n")
    assert load_error({}, conf) == f"unknown setting 'zzz' in {conf} line 1"


def test_conf_is_not_a_file_setting(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "conf = other.conf\n")
    assert load_error({}, conf).startswith(f"unknown setting 'conf' in {conf} line 1")


# ---- casters: success ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("role", "TRADITIONAL", "traditional"),
        ("role", " Data_Plane ", "data_plane"),
        ("log_level", "WARN", "warn"),
        ("log_format", "json", "json"),
        ("pg_port", "6543", 6543),
        ("pg_port", "65535", 65535),
        ("pg_timeout", " 250 ", 250),
        ("pg_ssl", "on", True),
        ("pg_ssl", "TRUE", True),
        ("pg_ssl", "Yes", True),
        ("pg_ssl", "1", True),
        ("pg_ssl", "off", False),
        ("pg_ssl", "False", False),
        ("pg_ssl", "no", False),
        ("pg_ssl", "0", False),
        ("db_update_frequency", "0.5", 0.5),
        ("db_update_frequency", "2", 2.0),
        ("upstream_keepalive_idle_timeout", "0", 0.0),
        ("lmdb_map_size", "1g", 1024**3),
        ("lmdb_map_size", "512M", 512 * 1024**2),
        ("lmdb_map_size", "1048576", 1024**2),
        ("client_max_body_size", "8k", 8192),
        ("client_max_body_size", "0", 0),
        ("max_request_header_size", "64K", 65536),
        ("workers", "4", 4),
        ("plugins", "bundled, my-plugin ,, other_one", ("bundled", "my-plugin", "other_one")),
        ("plugins", "off", ()),
        ("plugins", "", ()),
        ("headers", "Server, X-Kong-Upstream-Latency", ("server", "x-kong-upstream-latency")),
        ("headers", "off", ()),
        ("trusted_ips", "10.0.0.0/8, ::1,192.168.1.7/24", None),
        ("proxy_access_log", "OFF", None),
        ("proxy_access_log", "/var/log/zg.log", Path("/var/log/zg.log")),
        ("declarative_config", "kong.yaml", Path("kong.yaml")),
        ("declarative_config", "", None),
        ("cluster_ca_cert", "/etc/zg/ca.crt", Path("/etc/zg/ca.crt")),
        ("cluster_server_name", "cp.zonegate.local", "cp.zonegate.local"),
        (
            "cluster_nats_url",
            "nats://a:4222, tls://b, tls://[::1]:4223",
            ("nats://a:4222", "tls://b", "tls://[::1]:4223"),
        ),
        ("cluster_name", "eu-west_1", "eu-west_1"),
        ("cluster_js_domain", "hub", "hub"),
        ("cluster_hub_js_domain", "region-a", "region-a"),
        ("cluster_js_replicas", "5", 5),
        ("cluster_snapshot_history", "1", 1),
        ("cluster_data_plane_purge_delay", "60", 60),
        ("real_ip_header", "X-Forwarded-For", "X-Forwarded-For"),
        ("pg_dsn", "postgres://u:p@h:5/d", "postgres://u:p@h:5/d"),
        ("admin_token", "abc", "abc"),
        ("prefix", "/srv/zg", Path("/srv/zg")),
    ],
)
def test_caster_accepts(name: str, text: str, expected: object) -> None:
    value = getattr(load_settings({**DP, env_name(name): text}, None), name)
    if name == "trusted_ips":
        expected = (
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
            ipaddress.ip_network("192.168.1.0/24"),
        )
    assert value == expected
    assert type(value) is type(expected)


def test_workers_auto_is_the_cpu_count() -> None:
    assert load_settings({"ZONEGATE_WORKERS": "auto"}, None).workers == (os.cpu_count() or 1)


def test_relative_prefix_is_made_absolute() -> None:
    assert load_settings({"ZONEGATE_PREFIX": "run/zg"}, None).prefix == Path.cwd() / "run" / "zg"


# ---- casters: failures, exact one-line messages ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("role", "hybrid", "must be one of: traditional, control_plane, data_plane"),
        ("database", "cassandra", "must be one of: postgres, off"),
        ("log_level", "verbose", "must be one of: debug, info, notice, warn, error, crit"),
        ("log_format", "xml", "must be one of: console, json"),
        ("cluster_mtls", "pki_check_cn", "must be one of: shared, pki"),
        ("pg_port", "abc", "expected an integer"),
        ("pg_port", "5_432", "expected an integer"),
        ("pg_port", "", "expected an integer"),
        ("pg_port", "0", "must be between 1 and 65535"),
        ("pg_port", "65536", "must be between 1 and 65535"),
        ("pg_timeout", "-1", "must be between 1 and 3600000"),
        ("upstream_keepalive_pool_size", "-1", "must be at least 0"),
        ("cluster_data_plane_purge_delay", "59", "must be at least 60"),
        ("max_request_headers", "1001", "must be between 1 and 1000"),
        ("pg_ssl", "maybe", "expected a boolean (on/off, true/false, yes/no, 1/0)"),
        ("pg_ssl", "", "expected a boolean (on/off, true/false, yes/no, 1/0)"),
        ("db_update_frequency", "0", "must be greater than 0"),
        ("db_update_frequency", "fast", "expected a number of seconds"),
        ("db_update_frequency", "nan", "expected a number of seconds"),
        ("db_update_frequency", "1e3", "expected a number of seconds"),
        ("upstream_keepalive_idle_timeout", "-0.5", "must be at least 0"),
        ("lmdb_map_size", "2gb", "expected a size such as 512, 64k, 32m or 2g"),
        ("lmdb_map_size", "1k", "must be at least 1m"),
        ("max_request_header_size", "17m", "must be between 1k and 16m"),
        ("client_max_body_size", "-1", "expected a size such as 512, 64k, 32m or 2g"),
        ("workers", "many", "expected an integer or auto"),
        ("workers", "0", "must be between 1 and 1024"),
        ("plugins", "bundled, off", "off cannot be combined with plugin names"),
        ("plugins", "My Plugin", "invalid plugin name 'my plugin'"),
        (
            "headers",
            "server_tokens, x-powered-by",
            "invalid entry 'x-powered-by' (allowed: off, server_tokens, latency_tokens, via, server, "
            "x-kong-proxy-latency, x-kong-response-latency, x-kong-admin-latency, "
            "x-kong-upstream-latency, x-kong-upstream-status, x-kong-request-id)",
        ),
        ("trusted_ips", "10.0.0.0/8, 10.0.0.300", "'10.0.0.300' is not an IP address or CIDR block"),
        ("trusted_ips", "unix:", "'unix:' is not an IP address or CIDR block"),
        ("pg_host", "", "must not be empty"),
        ("proxy_error_log", "", "must not be empty"),
        (
            "cluster_cert",
            "-----BEGIN CERTIFICATE-----",
            "inline PEM is not supported, give the path of a PEM file",
        ),
        ("cluster_server_name", "not a name", "must be a DNS name"),
        ("cluster_nats_url", "", "at least one URL is required"),
        ("cluster_nats_url", "tls://a, http://b:4222", "'http://b:4222' must start with nats:// or tls://"),
        ("cluster_nats_url", "nats://:4222", "'nats://:4222' has no host"),
        ("cluster_nats_url", "nats://a:99999", "'nats://a:99999' is not a valid URL"),
        (
            "cluster_name",
            "eu.west",
            "must be 1-64 letters, digits, '_' or '-' (it becomes part of NATS subjects and stream names)",
        ),
        (
            "cluster_js_domain",
            "a b",
            "must be 1-64 letters, digits, '_' or '-' (it becomes part of NATS subjects and stream names)",
        ),
        ("cluster_snapshot_history", "0", "must be between 1 and 10000"),
        ("cluster_js_replicas", "0", "must be between 1 and 5"),
        ("cluster_js_replicas", "6", "must be between 1 and 5"),
        (
            "cluster_hub_js_domain",
            "region.a",
            "must be 1-64 letters, digits, '_' or '-' (it becomes part of NATS subjects and stream names)",
        ),
        ("real_ip_header", "X Real IP", "must be an HTTP header name"),
    ],
)
def test_caster_rejects_with_one_line_naming_the_setting(name: str, text: str, reason: str) -> None:
    variable = env_name(name)
    message = load_error({**DP, variable: text})
    assert message == f"invalid {variable}: {text.strip()!r}: {reason}"


def test_error_from_the_conf_file_names_file_and_line(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "\nproxy_listen = 0.0.0.0:99999\n")
    assert load_error({}, conf) == (
        f"invalid proxy_listen in {conf} line 2: '0.0.0.0:99999': port must be between 1 and 65535"
    )


@pytest.mark.parametrize("name", ["pg_dsn"])
def test_secret_values_are_hidden_in_errors(name: str) -> None:
    message = load_error({env_name(name): "mysql://root:hunter2@db/x"})
    assert message == f"invalid {env_name(name)}: <hidden>: must be a postgresql:// or postgres:// URL"
    assert "hunter2" not in message


def test_secret_values_are_hidden_in_repr() -> None:
    s = load_settings({"ZONEGATE_PG_PASSWORD": "hunter2", "ZONEGATE_ADMIN_TOKEN": "tok3n"}, None)
    assert "hunter2" not in repr(s)
    assert "tok3n" not in repr(s)
    assert "pg_host='127.0.0.1'" in repr(s)


@given(st.sampled_from(["on", "off", "true", "false", "yes", "no", "1", "0"]), st.data())
def test_booleans_are_case_insensitive(word: str, data: st.DataObject) -> None:
    mixed = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in word)
    expected = word in ("on", "true", "yes", "1")
    assert load_settings({"ZONEGATE_PG_SSL": mixed}, None).pg_ssl is expected


@given(st.integers(1, 4096), st.sampled_from([("", 1), ("k", 1024), ("m", 1024**2), ("g", 1024**3)]))
def test_size_syntax(number: int, unit: tuple[str, int]) -> None:
    suffix, factor = unit
    s = load_settings({"ZONEGATE_CLIENT_MAX_BODY_SIZE": f"{number}{suffix}"}, None)
    assert s.client_max_body_size == number * factor


# ---- listeners -----------------------------------------------------------------------------------


def listen(text: str) -> tuple[Listen, ...]:
    return load_settings({"ZONEGATE_PROXY_LISTEN": text}, None).proxy_listen


def test_listen_ipv6_with_flags() -> None:
    assert listen("[::1]:8001 http2 ssl reuseport") == (
        Listen("::1", 8001, ssl=True, http2=True, reuseport=True),
    )


def test_listen_backlog_star_and_hostname() -> None:
    assert listen("*:80 backlog=16384, Proxy.Example.com:8080, [2001:DB8::1]:443 SSL") == (
        Listen("0.0.0.0", 80, backlog=16384),
        Listen("proxy.example.com", 8080),
        Listen("2001:db8::1", 443, ssl=True),
    )


def test_listen_off() -> None:
    assert listen("off") == ()
    assert listen(" OFF ") == ()


def test_listen_str_is_kongs_form() -> None:
    assert str(Listen("::1", 8001, ssl=True, http2=True, backlog=5)) == "[::1]:8001 ssl http2 backlog=5"
    assert str(Listen("0.0.0.0", 8000)) == "0.0.0.0:8000"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0.0.0.0:99999", "port must be between 1 and 65535"),
        ("0.0.0.0:0", "port must be between 1 and 65535"),
        ("0.0.0.0:http", "invalid port 'http'"),
        ("0.0.0.0", "expected <host>:<port>, got '0.0.0.0'"),
        (":8000", "expected <host>:<port>, got ':8000'"),
        ("", "expected off or <host>:<port> [flags], ..."),
        (
            "0.0.0.0:8000 proxy_protocol",
            "unknown flag 'proxy_protocol' (supported: ssl, http2, reuseport, backlog=N)",
        ),
        ("0.0.0.0:8000 ssl ssl", "flag 'ssl' given twice"),
        ("0.0.0.0:8000 backlog=0", "backlog must be a positive integer, got '0'"),
        ("0.0.0.0:8000 backlog", "unknown flag 'backlog' (supported: ssl, http2, reuseport, backlog=N)"),
        ("0.0.0.0:8000 ssl=1", "unknown flag 'ssl=1' (supported: ssl, http2, reuseport, backlog=N)"),
        ("::1:8000", "IPv6 address '::1' must be in brackets, e.g. [::1]:8000"),
        ("[::1:8000", "expected [<ipv6>]:<port>, got '[::1:8000'"),
        ("[::1]8000", "expected [<ipv6>]:<port>, got '[::1]8000'"),
        ("[::g]:8000", "invalid IPv6 address '::g'"),
        ("300.1.1.1:80", "invalid IPv4 address '300.1.1.1'"),
        ("bad_host:80", "invalid host 'bad_host'"),
        ("off, 0.0.0.0:8000", "off cannot be combined with listeners"),
        ("0.0.0.0:8000, 0.0.0.0:99999 ssl", "in '0.0.0.0:99999 ssl': port must be between 1 and 65535"),
        ("0.0.0.0:8000, *:8000 ssl", "0.0.0.0:8000 is listed twice"),
    ],
)
def test_listen_errors(text: str, reason: str) -> None:
    assert load_error({"ZONEGATE_ADMIN_LISTEN": text}) == f"invalid ZONEGATE_ADMIN_LISTEN: {text!r}: {reason}"


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", fullmatch=True),
)
listeners = st.builds(
    Listen,
    host=hosts,
    port=st.integers(1, 65535),
    ssl=st.booleans(),
    http2=st.booleans(),
    reuseport=st.booleans(),
    backlog=st.none() | st.integers(1, 65535),
)


@settings(max_examples=200)
@given(st.lists(listeners, min_size=1, max_size=4, unique_by=lambda item: (item.host, item.port)))
def test_listen_round_trips_through_kongs_syntax(items: list[Listen]) -> None:
    assert listen(", ".join(str(item) for item in items)) == tuple(items)


# ---- labels --------------------------------------------------------------------------------------


def labels(text: str) -> Mapping[str, str]:
    return load_settings({**DP, "ZONEGATE_CLUSTER_DP_LABELS": text}, None).cluster_dp_labels


def test_labels_parse_into_a_frozen_mapping() -> None:
    parsed = labels("deployment:local, region:eu-west.1 ,,zone:a:b")
    assert dict(parsed) == {"deployment": "local", "region": "eu-west.1", "zone": "a:b"}
    with pytest.raises(TypeError):
        parsed["x"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("deployment", "label 'deployment' must be key:value"),
        (
            "Region:eu",
            "label key 'Region' must be 1-63 characters: lowercase letters, digits, '_', '-', '.', "
            "starting with a letter and ending with a letter or digit",
        ),
        (
            "1zone:a",
            "label key '1zone' must be 1-63 characters: lowercase letters, digits, '_', '-', '.', "
            "starting with a letter and ending with a letter or digit",
        ),
        (
            ":a",
            "label key '' must be 1-63 characters: lowercase letters, digits, '_', '-', '.', "
            "starting with a letter and ending with a letter or digit",
        ),
        (
            "k" * 64 + ":a",
            f"label key {'k' * 64!r} must be 1-63 characters: lowercase letters, digits, '_', '-', "
            "'.', starting with a letter and ending with a letter or digit",
        ),
        (
            "zone:",
            "label value '' must be 1-63 characters: letters, digits, '_', '-', '.', ':', "
            "starting and ending with a letter or digit",
        ),
        (
            "zone:eu west",
            "label value 'eu west' must be 1-63 characters: letters, digits, '_', '-', '.', ':', "
            "starting and ending with a letter or digit",
        ),
        (
            "zone:" + "v" * 64,
            f"label value {'v' * 64!r} must be 1-63 characters: letters, digits, '_', '-', '.', "
            "':', starting and ending with a letter or digit",
        ),
        ("zone:a,zone:b", "label key 'zone' is given twice"),
        (",".join(f"k{i}:v" for i in range(11)), "at most 10 labels are allowed, got 11"),
    ],
)
def test_label_errors(text: str, reason: str) -> None:
    assert load_error({**DP, "ZONEGATE_CLUSTER_DP_LABELS": text}) == (
        f"invalid ZONEGATE_CLUSTER_DP_LABELS: {text!r}: {reason}"
    )


def test_longest_label_key_and_value_are_accepted() -> None:
    key, value = "k" * 63, "V" * 63
    assert dict(labels(f"{key}:{value}")) == {key: value}


@pytest.mark.parametrize("role", ["traditional", "control_plane"])
def test_labels_only_on_data_planes(role: str) -> None:
    assert load_error({"ZONEGATE_ROLE": role, "ZONEGATE_CLUSTER_DP_LABELS": "deployment:local"}) == (
        f"cluster_dp_labels can only be used when role = data_plane (role is {role})"
    )


# ---- cross-setting rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message", "setting"),
    [
        (
            {"ZONEGATE_ROLE": "data_plane"},
            "database must be off when role = data_plane (got database = postgres); "
            "set ZONEGATE_DATABASE=off",
            "database",
        ),
        (
            {**CP, "ZONEGATE_DATABASE": "off"},
            "database = off cannot be used when role = control_plane; the control plane needs postgres",
            "database",
        ),
        (
            {**CP, "ZONEGATE_ADMIN_LISTEN": "off"},
            "admin_listen must not be off when role = control_plane",
            "admin_listen",
        ),
        (
            {**DP, "ZONEGATE_PROXY_LISTEN": "off"},
            "proxy_listen must not be off when role = data_plane",
            "proxy_listen",
        ),
        (
            {**DP, "ZONEGATE_CLUSTER_MTLS": "pki"},
            "cluster_ca_cert must be set when cluster_mtls = pki",
            "cluster_ca_cert",
        ),
        (
            {**DP, "ZONEGATE_CLUSTER_CERT": "cluster.crt"},
            "cluster_cert and cluster_cert_key must be set together",
            "cluster_cert_key",
        ),
        (
            {**DP, "ZONEGATE_CLUSTER_CERT_KEY": "cluster.key"},
            "cluster_cert and cluster_cert_key must be set together",
            "cluster_cert",
        ),
        (
            {"ZONEGATE_DECLARATIVE_CONFIG": "kong.yaml"},
            "declarative_config can only be used with database = off (database is postgres)",
            "declarative_config",
        ),
        (
            {**CP, "ZONEGATE_CLUSTER_JS_DOMAIN": "hub", "ZONEGATE_CLUSTER_HUB_JS_DOMAIN": "hub"},
            "cluster_hub_js_domain can only be used when role = data_plane (role is control_plane); "
            "a control plane's hub domain is its cluster_js_domain",
            "cluster_hub_js_domain",
        ),
    ],
)
def test_cross_setting_rules(environ: dict[str, str], message: str, setting: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ, None)
    assert str(info.value) == message
    assert info.value.setting == setting


def test_purge_delay_rule_also_guards_settings_built_in_code() -> None:
    too_short = dataclasses.replace(load_settings({}, None), cluster_data_plane_purge_delay=59)
    with pytest.raises(
        SettingsError, match=r"^cluster_data_plane_purge_delay must be 60 or greater \(got 59\)$"
    ):
        check_settings(too_short)


def test_valid_hybrid_nodes_load() -> None:
    dp = load_settings(
        {
            **DP,
            "ZONEGATE_CLUSTER_MTLS": "pki",
            "ZONEGATE_CLUSTER_CA_CERT": "ca.crt",
            "ZONEGATE_DECLARATIVE_CONFIG": "kong.yaml",
            "ZONEGATE_CLUSTER_DP_LABELS": "deployment:local",
        },
        None,
    )
    assert dp.cluster_ca_cert == Path("ca.crt")
    assert dp.cluster_cert is None  # certs are checked by the hybrid code, not here
    cp = load_settings(CP, None)
    assert cp.database == "postgres"
    traditional_dbless = load_settings({"ZONEGATE_DATABASE": "off"}, None)
    assert traditional_dbless.role == "traditional"


def test_a_region_data_plane_names_the_hub_domain_of_the_shared_counters() -> None:
    region = {**DP, "ZONEGATE_CLUSTER_JS_DOMAIN": "region-b"}
    assert load_settings(region, None).hub_js_domain == "region-b"  # not set: its own domain
    with_hub = load_settings({**region, "ZONEGATE_CLUSTER_HUB_JS_DOMAIN": "region-a"}, None)
    assert (with_hub.cluster_js_domain, with_hub.hub_js_domain) == ("region-b", "region-a")
    assert load_settings(DP, None).hub_js_domain is None


def test_the_first_violated_rule_is_reported() -> None:
    message = load_error({"ZONEGATE_ROLE": "data_plane", "ZONEGATE_PROXY_LISTEN": "off"})
    assert message.startswith("database must be off")


# ---- helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "flags"),
    [
        ({}, (False, False, True, True)),
        (CP, (True, False, False, True)),
        (DP, (False, True, True, False)),
    ],
)
def test_role_helpers(environ: dict[str, str], flags: tuple[bool, bool, bool, bool]) -> None:
    s = load_settings(environ, None)
    assert (s.is_control_plane, s.is_data_plane, s.serves_proxy, s.serves_admin) == flags


def test_resolve_path_is_relative_to_prefix() -> None:
    s = load_settings({"ZONEGATE_PREFIX": "/srv/zg"}, None)
    assert s.resolve_path(s.lmdb_environment_path) == Path("/srv/zg/dbless.lmdb")
    assert s.resolve_path("logs/access.log") == Path("/srv/zg/logs/access.log")
    assert s.resolve_path(Path("/var/lib/zg.lmdb")) == Path("/var/lib/zg.lmdb")


# ---- postgres DSN --------------------------------------------------------------------------------


def test_postgres_dsn_from_parts_quotes_user_and_password() -> None:
    s = load_settings(
        {
            "ZONEGATE_PG_HOST": "db.internal",
            "ZONEGATE_PG_PORT": "6543",
            "ZONEGATE_PG_USER": "kong admin",
            "ZONEGATE_PG_PASSWORD": "p@ss:w/rd#?%",
            "ZONEGATE_PG_DATABASE": "zg",
        },
        None,
    )
    dsn = s.postgres_dsn()
    assert dsn == "postgresql://kong%20admin:p%40ss%3Aw%2Frd%23%3F%25@db.internal:6543/zg?sslmode=disable"
    parts = urlsplit(dsn)
    assert parts.netloc.count("@") == 1  # asyncpg splits user info at the first '@'
    assert (unquote(parts.username or ""), unquote(parts.password or "")) == ("kong admin", "p@ss:w/rd#?%")
    assert (parts.hostname, parts.port, parts.path) == ("db.internal", 6543, "/zg")


def test_postgres_dsn_without_password_with_ssl_and_ipv6() -> None:
    s = load_settings({"ZONEGATE_PG_HOST": "::1", "ZONEGATE_PG_SSL": "on"}, None)
    assert s.postgres_dsn() == "postgresql://zonegate@[::1]:5432/zonegate?sslmode=require"


def test_postgres_dsn_with_a_unix_socket_directory() -> None:
    s = load_settings({"ZONEGATE_PG_HOST": "/run/postgresql"}, None)
    dsn = s.postgres_dsn()
    parts = urlsplit(dsn)
    assert parts.netloc == "zonegate@"
    assert parse_qs(parts.query) == {"host": ["/run/postgresql"], "port": ["5432"], "sslmode": ["disable"]}


def test_pg_dsn_wins_over_the_parts() -> None:
    dsn = "postgresql://other:secret@elsewhere:1/db?sslmode=verify-full"
    s = load_settings({"ZONEGATE_PG_DSN": dsn, "ZONEGATE_PG_HOST": "ignored"}, None)
    assert s.postgres_dsn() == dsn


@given(
    st.text(min_size=1, max_size=20).map(str.strip).filter(bool),
    st.text(min_size=1, max_size=20).map(str.strip).filter(bool),
)
def test_postgres_dsn_round_trips_any_credentials(user: str, password: str) -> None:
    s = dataclasses.replace(load_settings({}, None), pg_user=user, pg_password=password)
    parts = urlsplit(s.postgres_dsn())
    auth, _, host = parts.netloc.partition("@")
    quoted_user, _, quoted_password = auth.partition(":")
    assert (unquote(quoted_user), unquote(quoted_password), host) == (user, password, "127.0.0.1:5432")


# ---- immutability and errors ---------------------------------------------------------------------


def test_settings_are_frozen() -> None:
    s = load_settings({}, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.role = "data_plane"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.proxy_listen[0].port = 1  # type: ignore[misc]
    assert not hasattr(s, "__dict__")  # slots: no stray attributes either


def test_settings_error_is_one_line_with_the_setting() -> None:
    error = SettingsError("first\nsecond", setting="role")
    assert str(error) == "first second"
    assert error.setting == "role"
    assert isinstance(error, ValueError)
