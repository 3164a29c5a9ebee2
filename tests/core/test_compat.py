"""Kong's version rules for a data plane and the snapshot it is offered."""

from __future__ import annotations

import pytest

from zonegate.core import compat


@pytest.mark.parametrize(
    ("dp", "cp", "status"),
    [
        ("1.2.3", "1.2.3", "normal"),
        ("1.2.0", "1.2.9", "normal"),  # any patch level
        ("1.2.9", "1.2.0", "normal"),
        ("1.1.0", "1.3.0", "normal"),  # an older data plane minor is fine
        ("1.3.0", "1.2.5", "kong_version_incompatible"),  # a newer one refuses
        ("2.0.0", "1.9.0", "kong_version_incompatible"),
        ("1.9.0", "2.0.0", "kong_version_incompatible"),
        ("1.2.3-rc1", "1.2.3", "normal"),
        ("garbage", "1.2.3", "kong_version_incompatible"),
    ],
)
def test_node_versions(dp: str, cp: str, status: str) -> None:
    verdict = compat.check_node(dp, cp)
    assert verdict.status == status
    assert verdict.compatible is (status == "normal")
    if status != "normal":
        assert dp in verdict.reason or "versions" in verdict.reason


def test_missing_plugin_is_plugin_set_incompatible() -> None:
    verdict = compat.check_plugins({"key-auth": "1.0.0"}, {"key-auth": "1.0.0", "acl": "1.0.0"})
    assert verdict.status == "plugin_set_incompatible"
    assert "acl" in verdict.reason


@pytest.mark.parametrize(
    ("installed", "configured", "status"),
    [
        ("1.0.0", "1.0.0", "normal"),
        ("1.0.0", "1.4.0", "normal"),  # data plane's plugin minor older: fine
        ("1.5.0", "1.4.0", "plugin_version_incompatible"),
        ("2.0.0", "1.4.0", "plugin_version_incompatible"),
    ],
)
def test_plugin_versions(installed: str, configured: str, status: str) -> None:
    assert compat.check_plugins({"cors": installed}, {"cors": configured}).status == status


def test_node_rule_wins_over_plugins() -> None:
    verdict = compat.check(
        data_plane="1.5.0", control_plane="1.4.0", installed_plugins={}, configured_plugins={"acl": "1.4.0"}
    )
    assert verdict.status == "kong_version_incompatible"


def test_unused_plugins_do_not_matter() -> None:
    verdict = compat.check(
        data_plane="1.4.0", control_plane="1.4.0", installed_plugins={}, configured_plugins={}
    )
    assert verdict == compat.NORMAL
