"""``deploy/compose.yaml`` against the code: it parses, every Zonegate service runs real ``zonegate``
commands with real settings, every file it mounts is in the repository, the stack keeps the
shape the issue asks for (two regions, health checks, scalable data planes), and ``docker compose
config`` accepts it where docker compose is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest

from deploy.stack import (
    COMPOSE,
    COMPOSE_FILE,
    CONTROL_PLANES,
    DATA_PLANES,
    DEPLOY,
    IMAGE,
    REPO,
    SERVICES,
    ZONEGATE_SERVICES,
    builds_zonegate,
    check_invocation,
    environment,
    in_container,
    mounts,
    networks,
    resolves,
    settings_of,
    zonegate_invocations,
)
from zonegate.core import declarative
from zonegate.settings import CONF_ENV, ENV_PREFIX, SETTING_SPECS

SETTING_ENV_NAMES = frozenset(spec.env_name for spec in SETTING_SPECS)


def one_shot(service: Mapping[str, Any]) -> bool:
    return str(service.get("restart", "no")) == "no"


def test_the_stack_has_the_parts_the_issue_asks_for() -> None:
    assert COMPOSE.get("name"), "a fixed project name keeps volume and network names predictable"
    assert len(CONTROL_PLANES) >= 2, "two control plane replicas"
    hub_domains = {settings.cluster_js_domain for settings in CONTROL_PLANES.values()}
    assert len(hub_domains) == 1 and None not in hub_domains
    regions = {settings.cluster_dp_labels.get("region") for settings in DATA_PLANES.values()}
    assert len(regions) >= 2 and None not in regions, "data planes in two regions, labelled region:..."
    images = {str(service.get("image", "")).split(":")[0] for service in SERVICES.values()}
    for wanted in ("postgres", "prom/prometheus", "grafana/grafana"):
        assert wanted in images, f"no {wanted} service"
    assert any("otel" in name for name in SERVICES), "no OpenTelemetry collector"
    assert {"certs", "migrations"} <= set(ZONEGATE_SERVICES)


def test_every_long_running_service_has_a_health_check() -> None:
    jobs = [name for name, service in SERVICES.items() if one_shot(service)]
    assert set(jobs) == {"certs", "migrations", "sample-config"}, "one-shot jobs (restart: no)"
    for name, service in SERVICES.items():
        if name not in jobs:
            healthcheck = service.get("healthcheck") or {}
            assert healthcheck.get("test") and not healthcheck.get("disable"), f"{name}: no health check"


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, service in SERVICES.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            condition = spec.get("condition") if isinstance(spec, dict) else None
            target = SERVICES[dependency]
            expected = "service_completed_successfully" if one_shot(target) else "service_healthy"
            assert condition == expected, f"{name} -> {dependency}: condition {condition}, want {expected}"


@pytest.mark.parametrize("name", sorted(ZONEGATE_SERVICES))
def test_every_command_is_a_real_zonegate_command(name: str) -> None:
    invocations = list(zonegate_invocations(SERVICES[name], IMAGE))
    assert invocations, f"{name} runs no zonegate command"
    problems = [f"{where}: {problem}" for where, a in invocations if (problem := check_invocation(a))]
    assert not problems, "\n".join(problems)


def test_the_command_check_catches_mistakes() -> None:
    assert check_invocation(["zonegate", "start"]) is None
    assert check_invocation(["zonegate", "migration", "up"]) is not None
    assert check_invocation(["zonegate", "migrations", "up", "--nope"]) is not None
    assert check_invocation(["zonegate", "hybrid", "gen-cert", "a", "b", "c"]) is not None
    assert check_invocation(["zonegate", "config", "db-import"]) is not None  # FILE is required


def _environments() -> list[tuple[str, str]]:
    """(where, ZONEGATE_* name) for every one the stack sets: services, x- blocks, the Dockerfile."""
    found = [("deploy/Dockerfile", key) for key in IMAGE.env]
    for name, service in SERVICES.items():
        found += [(f"services.{name}", key) for key in environment(service)]
    for key, block in COMPOSE.items():
        if key.startswith("x-") and isinstance(block, dict):
            found += [(key, item) for item in block if isinstance(item, str)]
    return [(where, key) for where, key in found if key.startswith(ENV_PREFIX)]


def test_every_zonegate_variable_is_a_real_setting() -> None:
    found = _environments()
    assert len(found) > 20
    unknown = [f"{where}: {key}" for where, key in found if key not in SETTING_ENV_NAMES | {CONF_ENV}]
    assert not unknown, "not a Zonegate setting:\n" + "\n".join(unknown)


@pytest.mark.parametrize("name", sorted(ZONEGATE_SERVICES))
def test_zonegate_services_settings_load(name: str) -> None:
    # Values too: every setting casts and the cross-setting rules hold (as at start-up).
    settings_of(name)
    for key, value in environment(SERVICES[name]).items():
        assert value is not None, f"{key} has no value: compose would pass the host's through"


def test_control_planes_and_data_planes_agree_on_the_bus() -> None:
    for name, cp in CONTROL_PLANES.items():
        assert cp.database == "postgres" and cp.cluster_mtls == "pki", name
        assert cp.cluster_cert is not None and cp.cluster_ca_cert is not None, name
        assert any(listen.host == "0.0.0.0" for listen in cp.admin_listen), f"{name}: Admin API unreachable"
    certs = {cp.cluster_cert for cp in CONTROL_PLANES.values()}
    assert len(certs) == len(CONTROL_PLANES), "each control plane has its own certificate"
    hub = next(iter(CONTROL_PLANES.values()))
    for name, dp in DATA_PLANES.items():
        assert dp.database == "off" and dp.declarative_config is None, name
        assert dp.cluster_mtls == hub.cluster_mtls and dp.cluster_server_name == hub.cluster_server_name
        assert dp.cluster_js_domain is not None, f"{name}: reads the config stream of which domain?"
        assert dp.cluster_js_domain in (hub.cluster_js_domain, *hub.cluster_region_domains), (
            f"{name} reads domain {dp.cluster_js_domain}, where no control plane keeps the config stream"
        )
        assert dp.status_listen and all(listen.host == "0.0.0.0" for listen in dp.status_listen), (
            f"{name}: Prometheus must reach the Status API"
        )
        assert dp.proxy_listen, name
    region_domains = {dp.cluster_js_domain for dp in DATA_PLANES.values()} - {hub.cluster_js_domain}
    assert region_domains == set(hub.cluster_region_domains), "a mirror for every region, and only those"


def test_nodes_reach_their_nats_servers_and_data_planes_only_their_region() -> None:
    for name, settings in {**CONTROL_PLANES, **DATA_PLANES}.items():
        for url in settings.cluster_nats_url:
            host = urlsplit(url).hostname or ""
            assert resolves(COMPOSE, name, host), f"{name}: {host} resolves to no service on its networks"
    for name, dp in DATA_PLANES.items():
        if dp.cluster_js_domain in next(iter(CONTROL_PLANES.values())).cluster_region_domains:
            # A region's data planes must not reach the hub: they live on their region's copy.
            for other in CONTROL_PLANES:
                assert not set(networks(SERVICES[name])) & set(networks(SERVICES[other])), (
                    f"{name} shares a network with {other}"
                )


@pytest.mark.parametrize("name", sorted(DATA_PLANES))
def test_data_planes_scale(name: str) -> None:
    service = SERVICES[name]
    assert "container_name" not in service, f"{name}: a container name forbids --scale"
    for port in service.get("ports") or []:
        text = str(port)
        if ":" not in text:
            continue  # an ephemeral host port per replica
        published = text.rsplit(":", 1)[0]
        assert "-" in published.rsplit(":", 1)[-1], f"{name}: fixed host port {text} forbids --scale"
    for mount in mounts(service):
        assert mount.is_bind or mount.read_only, (
            f"{name}: replicas must not share the writable volume {mount.source} (the LMDB cache is per DP)"
        )
    settings = DATA_PLANES[name]
    assert not str(settings.prefix).startswith(tuple(m.target for m in mounts(service))), (
        f"{name}: the prefix (node id, LMDB cache) must be the container's own"
    )


def test_every_mounted_file_exists_in_the_repository() -> None:
    checked = 0
    for name, service in SERVICES.items():
        for mount in mounts(service):
            if mount.is_bind:
                assert mount.host_path().exists(), f"{name}: {mount.source} does not exist"
                assert mount.read_only, (
                    f"{name}: mount {mount.source} read-only: containers never write the repo"
                )
                checked += 1
            else:
                assert mount.source in (COMPOSE.get("volumes") or {}), (
                    f"{name}: undeclared volume {mount.source}"
                )
        build = service.get("build")
        if isinstance(build, dict):
            context = (DEPLOY / str(build.get("context", "."))).resolve()
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / str(build.get("dockerfile", "Dockerfile"))).is_file(), f"{name}: dockerfile"
        for env_file in service.get("env_file") or []:
            assert (DEPLOY / str(env_file)).is_file(), f"{name}: env_file {env_file}"
    assert checked >= 10


def test_every_path_setting_lives_in_a_mount() -> None:
    for name in ZONEGATE_SERVICES:
        settings = settings_of(name)
        for setting in ("cluster_cert", "cluster_cert_key", "cluster_ca_cert", "declarative_config"):
            value = getattr(settings, setting)
            if value is not None:
                assert in_container(SERVICES[name], str(value)), f"{name}: {setting} {value} is in no mount"


def test_zonegate_health_checks_probe_the_listeners_the_settings_open() -> None:
    for name in ZONEGATE_SERVICES:
        test = (SERVICES[name].get("healthcheck") or {}).get("test")
        if not test:
            continue
        assert test[:3] == ["CMD", "python", "-c"], f"{name}: the image has python, not curl"
        code = test[3]
        compile(code, f"{name} healthcheck", "exec")
        settings = settings_of(name)
        listeners = settings.admin_listen if settings.is_control_plane else settings.status_listen
        assert any(f"127.0.0.1:{listen.port}/status/ready" in code for listen in listeners), (
            f"{name}: probes {code!r}, which is not its ready endpoint"
        )


def test_the_sample_config_is_valid_and_exports_metrics() -> None:
    sample = [m for m in mounts(SERVICES["sample-config"]) if m.is_bind and m.source.endswith(".yml")]
    assert len(sample) == 1
    script = next(m for m in mounts(SERVICES["sample-config"]) if m.source.endswith(".sh"))
    default = re.search(r"^SAMPLE=\$\{SAMPLE:-([^}]+)\}$", script.host_path().read_text(), re.MULTILINE)
    assert default is not None and default[1] == sample[0].target, "the job reads the mounted sample"
    config = declarative.loads(sample[0].host_path().read_text(encoding="utf-8"))
    global_plugins = [p for p in config.of("plugins") if not any(p.get(k) for k in ("service", "route"))]
    prometheus = [p for p in global_plugins if p["name"] == "prometheus"]
    assert prometheus, "the prometheus plugin, enabled globally, feeds the dashboards"
    assert prometheus[0]["config"]["status_code_metrics"] and prometheus[0]["config"]["latency_metrics"]
    for service in config.of("services"):
        host = str(service["host"])
        for dp in DATA_PLANES:
            assert resolves(COMPOSE, dp, host), f"{dp} cannot resolve the sample's upstream {host}"


def _docker_compose() -> list[str] | None:
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for candidate in candidates:
        result = subprocess.run(
            [*candidate, "version", "--short"], capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode == 0 and result.stdout.strip().lstrip("v").startswith(("2", "3", "4", "5")):
            return candidate
    return None


def test_docker_compose_accepts_the_file() -> None:
    compose = _docker_compose()
    if compose is None:
        pytest.skip("docker compose (v2) is not installed")
    result = subprocess.run(
        [*compose, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_zonegate_service_runs_the_one_image() -> None:
    assert len({service.get("image") for service in ZONEGATE_SERVICES.values()}) == 1
    others = [name for name, service in SERVICES.items() if not builds_zonegate(service)]
    for name in others:
        assert service_image(SERVICES[name]) != next(iter(ZONEGATE_SERVICES.values()))["image"], name


def service_image(service: Mapping[str, Any]) -> str:
    return str(service.get("image", ""))
