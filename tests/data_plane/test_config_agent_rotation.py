"""The config agent during a signing-key rotation: what it applies, refuses, rebuilds and reports.

Real keys and the real codec go through ``ConfigAgent.offer``, the one door every snapshot takes;
the bus is never started (acks fail and are logged, as when the bus is down), so these check the
agent's decisions alone. Real processes: tests/hybrid/test_certificate_rotation.py.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zonegate.bus import certificates, snapshot
from zonegate.bus.connection import BusConnection, BusOptions
from zonegate.bus.signing import Signer, Verifier
from zonegate.bus.subjects import Names
from zonegate.core import declarative
from zonegate.core.canonical import ConfigHash, config_hash
from zonegate.core.config import Config
from zonegate.data_plane.config_agent import ConfigAgent, SyncState

ONE = declarative.loads('_format_version: "3.0"\nservices: [{name: one, url: "http://one:8080"}]\n')
TWO = declarative.loads(
    '_format_version: "3.0"\nservices: [{name: two, url: "http://two:8080", plugins: [{name: cors}]}]\n'
)


@dataclass
class Target:
    """Stands for the node: records what it was asked to build."""

    config: Config = field(default_factory=lambda: Config.build({}))
    applied: list[int] = field(default_factory=list)

    async def apply_snapshot(
        self, config: Config, version: int, hashes: ConfigHash, *_cached: object
    ) -> None:
        self.config = config
        self.applied.append(version)


@dataclass(frozen=True)
class Keys:
    old: Signer
    new: Signer
    only_old: Path
    only_new: Path
    both: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    pairs = {}
    for name in ("old", "new"):
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        certificates.write_pair(certificates.generate_cluster_certificate(), cert, key)
        pairs[name] = (cert, key)
    both = directory / "both.crt"
    both.write_bytes(pairs["old"][0].read_bytes() + pairs["new"][0].read_bytes())
    return Keys(
        Signer.from_files(*pairs["old"], include_certificate=False),
        Signer.from_files(*pairs["new"], include_certificate=False),
        pairs["old"][0],
        pairs["new"][0],
        both,
    )


def agent(
    trusted: Path, state: SyncState | None = None, plugins: dict[str, str] | None = None
) -> ConfigAgent:
    bus = BusConnection(BusOptions(("tls://127.0.0.1:9",), ssl.create_default_context(), None, "test"))
    return ConfigAgent(
        bus=bus,
        names=Names("default"),
        group="default",
        verifier=Verifier.shared(trusted),
        target=Target(),
        state=state or SyncState(),
        node_id="dp-test",
        installed_plugins=plugins if plugins is not None else {"cors": "0.1.0"},
        watchdog_interval=30,
    )


def signed(config: Config, version: int, signer: Signer) -> bytes:
    return snapshot.encode(
        config,
        version=version,
        cluster="default",
        group="default",
        signer=signer,
        signer_node="cp",
        plugin_versions={"cors": "0.1.0"},
        inline_limit=1 << 20,
        bucket="ZG_SNAPSHOTS_default",
    ).message


def applied(dp: ConfigAgent) -> list[int]:
    target = dp._target
    assert isinstance(target, Target)
    return target.applied


async def test_a_bundle_takes_both_keys_and_a_re_signed_version_rebuilds_nothing(keys: Keys) -> None:
    dp = agent(keys.both)
    assert await dp.offer(signed(ONE, 1, keys.old), 1) == 1
    assert applied(dp) == [1]
    # The control plane restarted with the new key re-signs the same version: nothing to build.
    assert await dp.offer(signed(ONE, 1, keys.new), 2) == 1
    assert applied(dp) == [1]
    assert (dp.state.status, dp.state.last_error) == ("normal", "")
    # And its next change applies.
    assert await dp.offer(signed(TWO, 2, keys.new), 3) == 2
    assert applied(dp) == [1, 2]
    assert dp.state.version == 2 and dp.state.status == "normal"


async def test_the_old_key_alone_refuses_the_new_one_and_keeps_serving(keys: Keys) -> None:
    dp = agent(keys.only_old)
    await dp.offer(signed(ONE, 1, keys.old), 1)
    assert await dp.offer(signed(TWO, 2, keys.new), 2) is None
    state = dp.state
    assert applied(dp) == [1]
    assert (state.version, state.config_hash) == (1, config_hash(ONE).config_hash)
    assert state.status == "config_rejected"
    assert state.last_error == "signature check failed: bad signature"


async def test_a_verified_copy_of_the_served_config_confirms_the_state(keys: Keys) -> None:
    # Started from its cache (version 1, status unknown), trusting only the new key.
    state = SyncState(version=1, config_hash=config_hash(ONE).config_hash)
    dp = agent(keys.only_new, state)
    await dp.offer(signed(ONE, 1, keys.old), 1)  # the bus still holds the old key's copy
    assert (state.status, state.last_error) == ("config_rejected", "signature check failed: bad signature")
    await dp.offer(signed(ONE, 1, keys.new), 2)  # re-signed by the control plane
    assert (state.status, state.last_error, state.version) == ("normal", "", 1)
    assert applied(dp) == []  # confirmed, not rebuilt


async def test_a_copy_of_the_served_config_keeps_a_newer_refusal(keys: Keys) -> None:
    dp = agent(keys.both, plugins={})
    await dp.offer(signed(ONE, 1, keys.old), 1)
    await dp.offer(signed(TWO, 2, keys.old), 2)  # needs cors, which this data plane lacks
    assert dp.state.status == "plugin_set_incompatible" and dp.state.rejected_version == 2
    reason = dp.state.last_error
    await dp.offer(signed(ONE, 1, keys.new), 3)  # version 1 again: older than what was refused
    assert (dp.state.status, dp.state.last_error, dp.state.rejected_version) == (
        "plugin_set_incompatible",
        reason,
        2,
    )
    assert applied(dp) == [1]
