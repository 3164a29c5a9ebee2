"""Version compatibility between a control plane's snapshot and a data plane (Kong's rules).

Kong (``kong/clustering/compat/init.lua``): the data plane must share the control plane's major
version and must not be newer by minor; older minors and any patch level are fine. Every plugin
the config uses must be present on the data plane (else ``plugin_set_incompatible``) with the
same major and a minor no newer than the control plane's (else ``plugin_version_incompatible``).
Kong checks this on the control plane, per connection; with one snapshot for every data plane,
each data plane checks it for itself and reports the verdict in its ack. The status strings are
Kong's, kept for tooling; ``config_rejected`` is ours (a snapshot that fails verification).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

SyncStatus = Literal[
    "unknown",
    "normal",
    "kong_version_incompatible",
    "plugin_set_incompatible",
    "plugin_version_incompatible",
    "config_rejected",
]
SYNC_STATUSES: Final[tuple[SyncStatus, ...]] = get_args(SyncStatus)

_VERSION_RE: Final = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, slots=True)
class Verdict:
    status: SyncStatus
    reason: str = ""

    @property
    def compatible(self) -> bool:
        return self.status == "normal"


NORMAL: Final = Verdict("normal")


def major_minor(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of ``1.2.3``, ``1.2`` or ``1.2.3-rc1``; None when it is not a version."""
    match = _VERSION_RE.match(version.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def check_node(data_plane: str, control_plane: str) -> Verdict:
    dp = major_minor(data_plane)
    cp = major_minor(control_plane)
    if dp is None or cp is None:
        return Verdict(
            "kong_version_incompatible",
            f"cannot compare versions: data plane {data_plane!r}, control plane {control_plane!r}",
        )
    if dp[0] != cp[0]:
        return Verdict(
            "kong_version_incompatible",
            f"data plane {data_plane} and control plane {control_plane} differ in major version",
        )
    if dp[1] > cp[1]:
        return Verdict(
            "kong_version_incompatible",
            f"data plane {data_plane} is newer than control plane {control_plane}",
        )
    return NORMAL


def check_plugins(installed: Mapping[str, str], configured: Mapping[str, str]) -> Verdict:
    """``installed``: the data plane's plugins; ``configured``: plugins the config uses, at CP versions."""
    missing = sorted(name for name in configured if name not in installed)
    if missing:
        return Verdict(
            "plugin_set_incompatible",
            f"plugin{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not installed on this data plane",
        )
    for name in sorted(configured):
        cp = major_minor(configured[name])
        dp = major_minor(installed[name])
        if cp is None or dp is None or dp[0] != cp[0] or dp[1] > cp[1]:
            return Verdict(
                "plugin_version_incompatible",
                f"plugin {name} {installed[name]} on this data plane is incompatible with "
                f"{configured[name]} on the control plane",
            )
    return NORMAL


def check(
    *,
    data_plane: str,
    control_plane: str,
    installed_plugins: Mapping[str, str],
    configured_plugins: Mapping[str, str],
) -> Verdict:
    verdict = check_node(data_plane, control_plane)
    if not verdict.compatible:
        return verdict
    return check_plugins(installed_plugins, configured_plugins)
