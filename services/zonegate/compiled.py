"""The proxy's hot path, compiled to C with mypyc, and how to tell whether it is.

Each proxied request runs through these modules; interpreted, their Python costs about 12 us of
the ~32 us a request takes on one core (ops/bench/proxy_python_cost.py), and mypyc compiles the
very same typed source to about 7. ``setup.py`` compiles every module named here when the
project is installed (``ZONEGATE_COMPILE=0``, or no C compiler, installs it interpreted: same
behaviour, slower). A compiled module is a ``.so`` next to its ``.py``, and Python imports the
``.so`` first, so after editing the ``.py`` in a checkout the ``.so`` is stale until
``make compile`` rebuilds it: ``hot_path_status`` tells, the test suite refuses to run on a stale
build, and ``zonegate start`` logs it.

This module is read by ``setup.py`` before the package is importable: standard library only.
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from typing import Final, Literal

HOT_PATH_MODULES: Final = (
    "zonegate.data_plane.client",
    "zonegate.data_plane.exchange",
    "zonegate.data_plane.upstream",
    "zonegate.data_plane.server",
    "zonegate.data_plane.responses",
    "zonegate.data_plane.router",
    "zonegate.data_plane.route_index",
    "zonegate.data_plane.plugin_phases",
    "zonegate.data_plane.runtime",
    "zonegate.data_plane.balancer",
    "zonegate.plugins.api",
    "zonegate.plugins.chains",
    "zonegate.plugins.consumer_headers",
    "zonegate.plugins.key_auth.handler",
    "zonegate.plugins.rate_limiting.handler",
    "zonegate.plugins.rate_limiting.local_counters",
    "zonegate.plugins.rate_limiting.windows",
    "zonegate.plugins.prometheus.handler",
    "zonegate.plugins.prometheus.metrics",
)

ModuleState = Literal["compiled", "interpreted", "stale"]
_EXTENSION_SUFFIX: Final = str(sysconfig.get_config_var("EXT_SUFFIX"))


def module_state(name: str) -> ModuleState:
    """How ``name`` would be imported: from its compiled extension, stale or not, or from source."""
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec is not None else None
    if origin is None or origin.endswith(".py"):
        return "interpreted"
    source = os.path.join(os.path.dirname(origin), name.rsplit(".", 1)[1] + ".py")
    try:
        if os.stat(source).st_mtime > _built_at(name, origin):
            return "stale"
    except OSError:
        pass  # an installed wheel may ship the extension alone
    return "compiled"


def _built_at(name: str, origin: str) -> float:
    """When ``name`` was last compiled. Its own extension is a small shim that keeps its old
    time when a rebuild leaves it unchanged; the code lives in the shared ``*__mypyc`` library
    beside the top-level package, rebuilt with every module."""
    root = origin
    for _ in name.split("."):
        root = os.path.dirname(root)
    built = os.stat(origin).st_mtime
    for entry in os.scandir(root):
        if "__mypyc" in entry.name and entry.name.endswith(_EXTENSION_SUFFIX):
            built = max(built, entry.stat().st_mtime)
    return built


def hot_path_status() -> dict[str, ModuleState]:
    return {name: module_state(name) for name in HOT_PATH_MODULES}


def summary() -> str:
    """One line for ``zonegate version`` and the start-up log."""
    states = hot_path_status()
    stale = [name for name, state in states.items() if state == "stale"]
    if stale:
        return f"hot path: STALE compiled modules (run make compile): {', '.join(stale)}"
    compiled = sum(1 for state in states.values() if state == "compiled")
    if compiled == len(states):
        return f"hot path: compiled with mypyc ({compiled} modules)"
    if compiled == 0:
        return "hot path: interpreted (installed with ZONEGATE_COMPILE=0 or without a C compiler)"
    return f"hot path: partly compiled ({compiled} of {len(states)} modules)"
