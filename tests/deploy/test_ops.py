"""The configs in ``ops/`` that ``deploy/compose.yaml`` mounts, against the code and the compose file.

- NATS: every ops/nats/*.conf equals what ``zonegate nats config`` writes today with the commands
  in ops/nats/generate.py; nats-server accepts it with the certificates the stack's ``certs``
  job makes; its names (routes, leaf link, domains) match the services of the compose file.
- Certificates: deploy/scripts/gen-certs.sh, run for real, makes every file the services and
  NATS configs name, with the roles and host names each link checks, and a second run keeps them.
- Prometheus, Grafana, the OpenTelemetry collector: every dashboard query names metrics and labels
  the data planes really export (rendered by the prometheus plugin's exporter), and the ports,
  hosts and paths agree with the compose file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509

from deploy.stack import (
    COMPOSE,
    CONTROL_PLANES,
    DATA_PLANES,
    REPO,
    SERVICES,
    ZONEGATE,
    in_container,
    mounts,
    resolves,
    settings_of,
    string_environment,
)
from zonegate.bus import certificates
from zonegate.bus.subjects import SERVER_IDENTITY
from zonegate.bus.tls import client_tls
from zonegate.embedded.nats_server import NatsServerError, find_nats_server
from zonegate.plugins.prometheus.exporter import exposition
from zonegate.plugins.prometheus.metrics import FAMILIES, Registry
from zonegate.settings import Settings

NATS_DIR = REPO / "ops" / "nats"
VENV_BIN = str(ZONEGATE.parent)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ops_nats_generate", NATS_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE = _generator()
COMMANDS: dict[str, list[str]] = GENERATE.commands()


# ---- NATS ---------------------------------------------------------------------------------------------


def nats_services() -> dict[str, tuple[str, Path]]:
    """conf file name -> (service that mounts it, its container path)."""
    found: dict[str, tuple[str, Path]] = {}
    for name, service in SERVICES.items():
        for mount in mounts(service):
            if mount.is_bind and mount.host_path().parent == NATS_DIR:
                assert mount.host_path().name not in found, f"{mount.source} mounted twice"
                found[mount.host_path().name] = (name, Path(mount.target))
    return found


NATS_SERVICES = nats_services()


def test_every_nats_config_is_generated_and_mounted() -> None:
    on_disk = {path.name for path in NATS_DIR.glob("*.conf")}
    assert on_disk == set(COMMANDS), "ops/nats/*.conf and ops/nats/generate.py disagree"
    assert set(NATS_SERVICES) == on_disk, "every NATS config is mounted by exactly one service"
    for conf, (service, target) in NATS_SERVICES.items():
        command = [str(part) for part in SERVICES[service].get("command") or []]
        assert str(target) in command, f"{service} mounts {conf} at {target} but runs {command}"


@pytest.mark.parametrize("conf", sorted(COMMANDS))
def test_nats_config_is_what_zonegate_generates_today(conf: str, tmp_path: Path) -> None:
    command = COMMANDS[conf]
    assert command[:3] == ["zonegate", "nats", "config"]
    out = tmp_path / conf
    result = subprocess.run(
        [str(ZONEGATE), *command[1:], "-o", str(out)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (NATS_DIR / conf).read_bytes(), (
        f"ops/nats/{conf} is not what `zonegate nats config` writes today: run python ops/nats/generate.py"
    )


def nats_conf(conf: str) -> dict[str, Any]:
    """The few facts of a rendered config the topology checks need (the renderer's own layout)."""
    text = (NATS_DIR / conf).read_text(encoding="utf-8")

    def one(pattern: str) -> str | None:
        match = re.search(pattern, text, re.MULTILINE)
        return match[1] if match else None

    routes = one(r"^  routes: \[(.*)\]$")
    return {
        "server_name": one(r'^server_name: "([^"]+)"$'),
        "domain": one(r'^  domain: "([^"]+)"$'),
        "routes": re.findall(r'"([^"]+)"', routes or ""),
        "leaf_remotes": re.findall(r'^      url: "([^"]+)"$', text, re.MULTILINE),
        "leaf_listen": bool(re.search(r"^leafnodes \{\n  listen:", text, re.MULTILINE)),
        "files": re.findall(r'^\s*(?:cert_file|key_file|ca_file): "([^"]+)"$', text, re.MULTILINE),
        "store_dir": one(r'^  store_dir: "([^"]+)"$'),
    }


def test_nats_topology_matches_the_compose_file() -> None:
    hub_domain = next(iter(CONTROL_PLANES.values())).cluster_js_domain
    for conf, (service, _) in NATS_SERVICES.items():
        facts = nats_conf(conf)
        assert facts["server_name"] == service, f"{conf}: server_name is not its service's name"
        for url in facts["routes"]:
            host = urlsplit(url).hostname or ""
            assert resolves(COMPOSE, service, host), f"{conf}: route {url} resolves to no service"
        for url in facts["leaf_remotes"]:
            host = urlsplit(url).hostname or ""
            hubs = resolves(COMPOSE, service, host)
            assert hubs, f"{conf}: leaf remote {url} resolves to no service"
            for hub in hubs:
                hub_conf = next(c for c, (s, _) in NATS_SERVICES.items() if s == hub)
                assert nats_conf(hub_conf)["leaf_listen"], f"{conf} dials {hub}, which has no leaf listener"
                assert nats_conf(hub_conf)["domain"] == hub_domain
        store = facts["store_dir"]
        mount = in_container(SERVICES[service], store)
        assert mount is not None and not mount.is_bind, f"{conf}: JetStream store {store} is not in a volume"
    for name, settings in {**CONTROL_PLANES, **DATA_PLANES}.items():
        for url in settings.cluster_nats_url:
            for server in resolves(COMPOSE, name, urlsplit(url).hostname or ""):
                conf = next(c for c, (s, _) in NATS_SERVICES.items() if s == server)
                assert nats_conf(conf)["domain"] == settings.cluster_js_domain, (
                    f"{name} reads domain {settings.cluster_js_domain} through {server}"
                )


# ---- certificates ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Pki:
    volumes: dict[str, Path]  # named volume -> where the job's run put its files

    def host_path(self, service: str, container_path: str) -> Path:
        mount = in_container(SERVICES[service], container_path)
        assert mount is not None and not mount.is_bind, f"{service}: {container_path} is in no volume"
        return self.volumes[mount.source] / os.path.relpath(container_path, mount.target)


def run_certs_job(volumes: dict[str, Path]) -> str:
    service = SERVICES["certs"]
    script = next(m for m in mounts(service) if m.is_bind and m.source.endswith(".sh"))
    text = script.host_path().read_text(encoding="utf-8")
    defaults = dict(re.findall(r"^(\w+)=\$\{\1:-(/[^}]*)\}$", text, re.MULTILINE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZONEGATE_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NODE_OWNER"] = ""
    for mount in mounts(service):
        if not mount.is_bind:
            variable = next((k for k, v in defaults.items() if v == mount.target), None)
            assert variable, f"gen-certs.sh has no directory variable defaulting to {mount.target}"
            env[variable] = str(volumes[mount.source])
    result = subprocess.run(
        ["sh", str(script.host_path())], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    base = tmp_path_factory.mktemp("volumes")
    volumes = {name: base / name for name in COMPOSE.get("volumes") or {}}
    for path in volumes.values():
        path.mkdir()
    run_certs_job(volumes)
    yield Pki(volumes)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_the_certs_job_keeps_what_it_made(pki: Pki) -> None:
    before = {name: _digests(path) for name, path in pki.volumes.items()}
    output = run_certs_job(pki.volumes)
    assert "wrote" not in output, output
    assert {name: _digests(path) for name, path in pki.volumes.items()} == before


def _in_container(settings: Settings, service: str, pki: Pki) -> Settings:
    def moved(path: Path | None) -> Path | None:
        return None if path is None else pki.host_path(service, str(path))

    return dataclasses.replace(
        settings,
        cluster_cert=moved(settings.cluster_cert),
        cluster_cert_key=moved(settings.cluster_cert_key),
        cluster_ca_cert=moved(settings.cluster_ca_cert),
    )


@pytest.mark.parametrize("service", sorted({*CONTROL_PLANES, *DATA_PLANES}))
def test_each_node_holds_a_valid_certificate_of_its_role(service: str, pki: Pki) -> None:
    settings = _in_container(settings_of(service), service, pki)
    tls = client_tls(settings)  # what the node checks at start-up: files, key, CA, validity
    wanted = "control_plane" if settings.is_control_plane else "data_plane"
    assert certificates.certificate_role(tls.certificate) == wanted
    # Least privilege: a node sees its own role's keys, never the CA key nor another role's.
    volume_files = {
        p.name for m in mounts(SERVICES[service]) if not m.is_bind for p in pki.volumes[m.source].iterdir()
    }
    assert "ca.key" not in volume_files
    other = "data-plane" if settings.is_control_plane else "control-plane"
    assert not any(name.startswith(other) for name in volume_files), volume_files


@pytest.mark.parametrize("conf", sorted(COMMANDS))
def test_each_nats_server_holds_the_names_its_peers_check(conf: str, pki: Pki) -> None:
    service = NATS_SERVICES[conf][0]
    facts = nats_conf(conf)
    files = [pki.host_path(service, path) for path in facts["files"]]
    for path in files:
        assert path.is_file(), f"{conf} names {path.name}, which the certs job does not make"
    cert_path = pki.host_path(service, next(p for p in facts["files"] if p.endswith(f"{service}.crt")))
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca_path = next(p for p in facts["files"] if Path(p).name == "ca.crt")
    ca = x509.load_pem_x509_certificate(pki.host_path(service, ca_path).read_bytes())
    cert.verify_directly_issued_by(ca)
    names = set(certificates.dns_names(cert))
    assert SERVER_IDENTITY in names, "routes and leaf links accept only nats-server certificates"
    # Names that clients and peers dial or check.
    wanted = {service}
    for name, settings in {**CONTROL_PLANES, **DATA_PLANES}.items():
        hosts = [urlsplit(url).hostname or "" for url in settings.cluster_nats_url]
        if any(service in resolves(COMPOSE, name, host) for host in hosts):
            wanted.add(settings.cluster_server_name or "")
    for other_conf, (other, _) in NATS_SERVICES.items():
        for url in nats_conf(other_conf)["routes"] + nats_conf(other_conf)["leaf_remotes"]:
            host = urlsplit(url).hostname or ""
            if other != service and service in resolves(COMPOSE, other, host):
                wanted.add(host)
    assert wanted <= names, f"{service}'s certificate lacks {sorted(wanted - names)}"


def test_nats_server_accepts_every_config(pki: Pki, tmp_path: Path) -> None:
    try:
        server = find_nats_server()
    except NatsServerError:
        pytest.skip("no nats-server binary (install the local extra)")
    for conf, (service, _) in NATS_SERVICES.items():
        text = (NATS_DIR / conf).read_text(encoding="utf-8")
        for path in set(nats_conf(conf)["files"]):
            text = text.replace(f'"{path}"', json.dumps(str(pki.host_path(service, path))))
        store = nats_conf(conf)["store_dir"]
        text = text.replace(f'"{store}"', json.dumps(str(tmp_path / service)))
        local = tmp_path / conf
        local.write_text(text, encoding="utf-8")
        result = subprocess.run(
            [str(server), "-t", "-c", str(local)], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, f"{conf}: {result.stdout}{result.stderr}"


# ---- metrics: what the data planes export --------------------------------------------------------


def exported_metrics() -> dict[str, set[str]]:
    """Every metric name a data plane's /metrics can show, with its labels: rendered by the real
    exporter from one sample of each family, upstream health, and a hybrid data plane's state."""
    registry = Registry()
    for family in FAMILIES.values():
        labels = tuple("x" for _ in family.labels)
        if family.kind == "histogram":
            registry.observe(family.name, labels, 1.0)
        else:
            registry.inc(family.name, labels)
    target = {"target": "t:80", "data": {"addresses": [{"ip": "10.0.0.1", "port": 80, "health": "HEALTHY"}]}}
    text = exposition(
        node_id="node",
        version="0",
        stats={"total_requests": 1},
        collected={"snapshots": [registry.snapshot()], "upstream_health": [["upstream", [target]]]},
        clustering={
            "bus_connected": True,
            "config_version": 1,
            "config_hash": "0" * 32,
            "sync_status": "normal",
        },
    )
    metrics: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            assert name is not None, line
            metrics.setdefault(name[0], set()).update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', line))
    return metrics


def prometheus_config() -> dict[str, Any]:
    mount = next(m for m in mounts(SERVICES["prometheus"]) if m.is_bind)
    config = yaml.safe_load(mount.host_path().read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    return config


def added_labels() -> set[str]:
    """Labels Prometheus itself adds to every data plane series."""
    labels = {"job", "instance"}
    for job in prometheus_config()["scrape_configs"]:
        labels |= {
            rule["target_label"] for rule in job.get("relabel_configs") or [] if "target_label" in rule
        }
    return labels


def test_prometheus_scrapes_every_data_plane_with_its_region() -> None:
    jobs = prometheus_config()["scrape_configs"]
    covered: dict[str, str] = {}
    for job in jobs:
        for sd in job.get("dns_sd_configs") or []:
            for name in sd["names"]:
                assert name in DATA_PLANES, f"{job['job_name']}: {name} is not a data plane service"
                ports = {listen.port for listen in DATA_PLANES[name].status_listen}
                assert sd["port"] in ports, f"{name}: scrapes port {sd['port']}, Status API on {ports}"
                assert job.get("metrics_path", "/metrics") == "/metrics"
                assert resolves(COMPOSE, "prometheus", name), f"prometheus is on no network of {name}"
                rule = next(
                    r
                    for r in job["relabel_configs"]
                    if r.get("target_label") == "region" and r["regex"] == name
                )
                covered[name] = str(rule["replacement"])
        for static in job.get("static_configs") or []:
            for target in static["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host == "localhost" or resolves(COMPOSE, "prometheus", host), f"target {target}"
    assert set(covered) == set(DATA_PLANES), "every data plane service is scraped"
    for name, region in covered.items():
        labels = dict(DATA_PLANES[name].cluster_dp_labels)
        assert labels.get("region") == region, f"{name}: Prometheus says region {region}, its labels {labels}"


GRAFANA = SERVICES["grafana"]


def grafana_mount(suffix: str) -> tuple[Path, str]:
    mount = next(m for m in mounts(GRAFANA) if m.is_bind and m.source.rstrip("/").endswith(suffix))
    return mount.host_path(), mount.target


def dashboards() -> dict[str, dict[str, Any]]:
    folder, _ = grafana_mount("grafana/dashboards")
    found = {
        path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))
    }
    assert found, "no dashboards"
    return found


_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_METRIC = re.compile(r"\b((?:kong|zonegate)_[a-z0-9_]+|up)\b(?!\s*\()")


def _labels_in(expr: str) -> set[str]:
    labels: set[str] = set()
    for group in _GROUPING.findall(expr):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    for body in _MATCHERS.findall(expr):
        labels |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    return labels


def _queries(board: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, expression, legend) of every query, variables included."""
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_]+)\)", text.strip())
        assert match, f"variable {variable['name']}: {text!r} is not label_values(metric, label)"
        yield f"variable {variable['name']}", match[1], "{{" + match[2] + "}}"
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target.get("legendFormat", "")


@pytest.mark.parametrize("file", sorted(dashboards()))
def test_dashboards_read_metrics_the_data_planes_export(file: str) -> None:
    metrics = exported_metrics() | {"up": set()}  # up: Prometheus's own, with the added labels
    extra = added_labels()
    problems: list[str] = []
    for title, expr, legend in _queries(dashboards()[file]):
        used = set(_METRIC.findall(expr))
        if not used:
            problems.append(f"{title}: {expr!r} reads no Zonegate metric")
        for metric in used - set(metrics):
            problems.append(f"{title}: no data plane exports {metric}")
        known = extra.union(*(metrics.get(metric, set()) for metric in used))
        for label in (_labels_in(expr) | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))) - known:
            problems.append(f"{title}: label {label!r} is on none of {sorted(used)}")
    assert not problems, "\n".join(problems)


def test_the_metric_check_knows_the_exporter() -> None:
    metrics = exported_metrics()
    assert {
        "kong_http_requests_total",
        "kong_request_latency_ms_bucket",
        "zonegate_data_plane_config_version",
    } <= set(metrics)
    assert {"service", "route", "code"} <= metrics["kong_http_requests_total"]
    assert "le" in metrics["kong_upstream_latency_ms_bucket"]


def test_grafana_provisioning_matches_the_stack() -> None:
    provisioning, target = grafana_mount("grafana/provisioning")
    assert target == "/etc/grafana/provisioning"
    datasources = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yaml").read_text(encoding="utf-8")
    )
    (datasource,) = datasources["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname and resolves(COMPOSE, "grafana", url.hostname), f"Grafana cannot reach {url.hostname}"
    assert f"127.0.0.1:{url.port}/" in " ".join(SERVICES[url.hostname]["healthcheck"]["test"])
    providers = yaml.safe_load((provisioning / "dashboards" / "zonegate.yaml").read_text(encoding="utf-8"))
    _, dashboards_target = grafana_mount("grafana/dashboards")
    assert [p["options"]["path"] for p in providers["providers"]] == [dashboards_target]
    home = string_environment(GRAFANA).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home is not None:
        assert home.startswith(dashboards_target + "/") and Path(home).name in dashboards()
    uids: set[str] = set()
    for file, board in dashboards().items():
        assert board["uid"] not in uids, f"{file}: uid {board['uid']} used twice"
        uids.add(board["uid"])
        sources = [p.get("datasource") for p in board["panels"] if p.get("type") != "row"]
        sources += [t.get("datasource") for p in board["panels"] for t in p.get("targets", [])]
        sources += [v.get("datasource") for v in board.get("templating", {}).get("list", [])]
        assert all(s == {"type": "prometheus", "uid": datasource["uid"]} for s in sources), file


def test_otel_collector_config_matches_the_stack() -> None:
    service = next(name for name in SERVICES if "otel" in name)
    mount = next(m for m in mounts(SERVICES[service]) if m.is_bind)
    config = yaml.safe_load(mount.host_path().read_text(encoding="utf-8"))
    assert f"--config={mount.target}" in SERVICES[service]["command"]
    for kind, pipeline in config["service"]["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in config[section], f"{kind} pipeline: {component} is not in {section}"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    health_port = config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1]
    assert f"127.0.0.1:{health_port}/" in " ".join(SERVICES[service]["healthcheck"]["test"])
    exporter_port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    targets = [
        t
        for job in prometheus_config()["scrape_configs"]
        for s in job.get("static_configs") or []
        for t in s["targets"]
    ]
    assert f"{service}:{exporter_port}" in targets, "Prometheus scrapes what the collector exports"
