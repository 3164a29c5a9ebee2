"""``nats_config.render``: what every file must say, what it refuses, and ``nats-server -t`` on every
combination of mode and topology (single server, cluster, supercluster gateway, hub, region)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bus.support import Pair, Pki
from zonegate.bus import nats_config
from zonegate.bus.nats_config import Gateway, LeafRemote, NatsConfigError, NatsConfigOptions, render
from zonegate.bus.subjects import CONTROL_PLANE_IDENTITY, DATA_PLANE_IDENTITY, SERVER_IDENTITY, Names
from zonegate.embedded.nats_server import find_nats_server

TOPOLOGIES: dict[str, dict[str, Any]] = {
    "single": {},
    "single-monitored": {"http": "127.0.0.1:8222", "js_domain": "solo"},
    "cluster": {
        "cluster_name": "zg-eu",
        "cluster_listen": "127.0.0.1:6222",
        "routes": ("nats-route://127.0.0.1:6222", "nats-route://10.0.0.2:6222"),
    },
    "supercluster": {
        "cluster_name": "zg-eu",
        "cluster_listen": "127.0.0.1:6222",
        "routes": ("nats-route://127.0.0.1:6222",),
        "gateway_listen": "127.0.0.1:7222",
        "gateways": (Gateway("zg-us", ("tls://10.0.1.1:7222", "tls://10.0.1.2:7222")),),
    },
    "hub": {"js_domain": "hub", "leaf_listen": "0.0.0.0:7422"},
    "region": {
        "js_domain": "eu",
        "remote_js_domains": ("hub",),
        "leaf_remotes": (LeafRemote("nats-leaf://hub.example:7422"),),
    },
    "everything": {
        "js_domain": "eu",
        "http": "127.0.0.1:8222",
        "cluster_name": "zg-eu",
        "cluster_listen": "127.0.0.1:6222",
        "routes": ("nats-route://127.0.0.1:6222",),
        "gateway_listen": "127.0.0.1:7222",
        "gateways": (Gateway("zg-us", ("tls://10.0.1.1:7222",)),),
        "leaf_listen": "127.0.0.1:7422",
        "leaf_remotes": (LeafRemote("tls://hub.example:7422"),),
    },
}
LISTENERS = {"single": 1, "single-monitored": 1, "cluster": 2, "supercluster": 3, "hub": 2, "region": 1}


def options(mode: str, pki: Pki, cluster_pair: Pair, tmp_path: Path, **extra: Any) -> NatsConfigOptions:
    cert = pki.server if mode == "pki" else cluster_pair
    return NatsConfigOptions(
        mode=mode,  # type: ignore[arg-type]
        cert_file=cert.cert,
        key_file=cert.key,
        ca_file=pki.ca.cert if mode == "pki" else None,
        listen="0.0.0.0:4222",
        store_dir=tmp_path / "store",
        server_name="nats-eu-1",
        **extra,
    )


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
@pytest.mark.parametrize("mode", ["shared", "pki"])
def test_nats_server_accepts_every_combination(
    mode: str, topology: str, pki: Pki, cluster_pair: Pair, tmp_path: Path
) -> None:
    extra = dict(TOPOLOGIES[topology])
    if topology == "region" and mode == "shared":
        del extra["remote_js_domains"]  # a pki-mode permission: no users in shared mode
    text = render(options(mode, pki, cluster_pair, tmp_path, **extra))
    config = tmp_path / "nats.conf"
    config.write_text(text)
    result = subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout + result.stderr
    # Every listener verifies client certificates: one tls block each, plus one per leaf remote.
    tls_blocks = re.findall(r"^\s*tls \{\n(.*?)^\s*\}", text, re.MULTILINE | re.DOTALL)
    listeners = LISTENERS.get(topology, 4)
    verify = "verify_and_map: true" if mode == "pki" else "verify: true"
    assert sum(verify in block for block in tls_blocks) == listeners
    assert len(tls_blocks) == listeners + len(extra.get("leaf_remotes", ()))
    assert "max_payload" not in text.replace("# max_payload", "")


def test_shared_mode_trusts_only_the_cluster_certificate(
    pki: Pki, cluster_pair: Pair, tmp_path: Path
) -> None:
    text = render(options("shared", pki, cluster_pair, tmp_path))
    assert f'ca_file: "{cluster_pair.cert}"' in text
    assert "verify_and_map" not in text and "authorization" not in text
    assert "1 MiB" in text  # says why max_payload is left alone


def test_pki_mode_maps_each_role_to_one_user(pki: Pki, cluster_pair: Pair, tmp_path: Path) -> None:
    text = render(options("pki", pki, cluster_pair, tmp_path, **TOPOLOGIES["everything"]))
    assert f'ca_file: "{pki.ca.cert}"' in text
    assert text.count(f'user: "{CONTROL_PLANE_IDENTITY}"') == 1
    assert text.count(f'user: "{DATA_PLANE_IDENTITY}"') == 1
    # routes, gateway and leaf listener map only nats-server certificates
    assert text.count(f'user: "{SERVER_IDENTITY}"') == 3


def test_data_plane_permissions_read_only_and_scoped() -> None:
    names = Names("edge")
    dp = nats_config.data_plane_permissions(names, [None, "eu"])
    assert dp.publish_allow[0] == "zg.edge.dp.>"
    for prefix in ("$JS.API", "$JS.eu.API"):
        assert f"{prefix}.STREAM.MSG.GET.ZG_CONFIG_edge" in dp.publish_allow
        assert f"{prefix}.DIRECT.GET.ZG_CONFIG_edge.>" in dp.publish_allow
        assert f"{prefix}.CONSUMER.CREATE.OBJ_ZG_SNAPSHOTS_edge.>" in dp.publish_allow
    assert "$JS.FC.OBJ_ZG_SNAPSHOTS_edge.>" in dp.publish_allow
    # rate-limiting's cluster counters: publish (compare-and-set) on the keys, direct get of one key.
    assert "$KV.ZG_RATELIMIT_edge.>" in dp.publish_allow
    # ... and, for a bucket in another domain, the same keys under that domain's API prefix.
    assert "$JS.eu.API.$KV.ZG_RATELIMIT_edge.>" in dp.publish_allow
    assert "$JS.API.$KV.ZG_RATELIMIT_edge.>" not in dp.publish_allow
    for prefix in ("$JS.API", "$JS.eu.API"):
        assert f"{prefix}.DIRECT.GET.KV_ZG_RATELIMIT_edge.>" in dp.publish_allow
    assert not any("KV_ZG_RATELIMIT_edge" in s and "DIRECT.GET" not in s for s in dp.publish_allow)
    assert not any(s.startswith("$KV.") for s in dp.subscribe_allow)
    assert not any(".STREAM.CREATE" in s or ".STREAM.DELETE" in s or ".PURGE" in s for s in dp.publish_allow)
    assert not any(s.startswith("zg.edge.config") or s.startswith("$O.") for s in dp.publish_allow)
    for denied in (
        "zg.edge.config.>",
        "$O.ZG_SNAPSHOTS_edge.>",
        "$JS.*.API.STREAM.DELETE.>",
        "$JS.API.STREAM.PURGE.>",
    ):
        assert denied in dp.publish_deny
    assert set(dp.subscribe_allow) == {"zg.edge.notify.>", "_INBOX.>"}
    assert dp.subscribe_deny == ("zg.edge.config.>", "$O.ZG_SNAPSHOTS_edge.>")
    cp = nats_config.control_plane_permissions(names)
    assert "zg.edge.config.>" in cp.publish_allow and "$O.ZG_SNAPSHOTS_edge.>" in cp.publish_allow
    assert "zg.edge.notify.>" in cp.publish_allow
    assert "zg.edge.dp.>" in cp.subscribe_allow
    assert "zg.edge.config.>" not in cp.subscribe_allow  # nobody subscribes there (see nats_config)


def test_domain_forms_follow_the_js_domain(pki: Pki, cluster_pair: Pair, tmp_path: Path) -> None:
    with pytest.raises(NatsConfigError, match="is this server's own --js-domain"):
        render(options("pki", pki, cluster_pair, tmp_path, js_domain="eu", remote_js_domains=("eu",)))
    local = render(options("pki", pki, cluster_pair, tmp_path))
    assert "$JS.eu.API" not in local
    regional = render(options("pki", pki, cluster_pair, tmp_path, js_domain="eu", remote_js_domains=("hub",)))
    assert '"$JS.eu.API.STREAM.MSG.GET.ZG_CONFIG_default"' in regional
    assert '"$JS.hub.API.DIRECT.GET.ZG_CONFIG_default.>"' in regional
    assert '"$JS.hub.API.$KV.ZG_RATELIMIT_default.>"' in regional  # counting in the hub's bucket
    assert 'domain: "eu"' in regional
    other = render(options("pki", pki, cluster_pair, tmp_path, zonegate_cluster="blue"))
    assert "zg.blue.config.>" in other and "zg.default" not in other


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "pki"}, "--ca is required in pki mode"),
        ({"ca_file": Path("ca.crt")}, "--ca is only for pki mode"),
        ({"listen": "4222"}, "--listen '4222' must be HOST:PORT"),
        ({"listen": "0.0.0.0:70000"}, "must be HOST:PORT"),
        ({"http": "localhost"}, "--http 'localhost' must be HOST:PORT"),
        ({"zonegate_cluster": "a.b"}, "--zonegate-cluster 'a.b' must use only"),
        ({"server_name": "two words"}, "--server-name 'two words'"),
        ({"routes": ("nats-route://a:6222",)}, "--routes needs --cluster-listen"),
        ({"cluster_listen": "0.0.0.0:6222", "cluster_name": "c"}, "--cluster-listen needs --routes"),
        ({"cluster_listen": "0.0.0.0:6222", "routes": ("nats-route://a:6222",)}, "needs --cluster-name"),
        ({"gateway_listen": "0.0.0.0:7222", "cluster_name": "c"}, "--gateway-listen needs --cluster-listen"),
        ({"gateways": (Gateway("b", ("tls://b:7222",)),)}, "--gateway needs --gateway-listen"),
        ({"leaf_listen": "0.0.0.0:7422"}, "leaf nodes need --js-domain"),
        ({"leaf_remotes": (LeafRemote("nats-leaf://hub:7422"),)}, "leaf nodes need --js-domain"),
        (
            {"js_domain": "eu", "leaf_remotes": (LeafRemote("http://hub:7422"),)},
            "--leaf-remote 'http://hub:7422'",
        ),
        ({"js_domain": "eu", "leaf_remotes": (LeafRemote("nats-leaf://u:p@hub:7422"),)}, "no credentials"),
        ({"js_domain": "eu", "remote_js_domains": ("hub",)}, "--remote-js-domain is for pki mode"),
        (
            {"js_domain": "eu", "leaf_listen": "0.0.0.0:7422", "server_name": None},
            "leaf nodes need --server-name",
        ),
    ],
)
def test_refuses_options_that_cannot_work(
    changes: dict[str, Any], message: str, pki: Pki, cluster_pair: Pair, tmp_path: Path
) -> None:
    base = options("shared", pki, cluster_pair, tmp_path)
    with pytest.raises(NatsConfigError, match=re.escape(message)) as caught:
        render(dataclasses.replace(base, **changes))
    assert "\n" not in str(caught.value)
