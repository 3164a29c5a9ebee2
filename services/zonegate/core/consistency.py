"""The consistency check of a whole config: before a snapshot is published and before applied.

A snapshot is the contract between control and data planes (STYLE.md point 4): every reference
resolves (cheap: run on every publish and every apply). Schema validity of every entity (about
27 us an entity, 0.27 s at 10,000 routes) is not re-checked per change: the store validates each
write, and a snapshot's bytes are covered by the control plane's signature. A failure means a bug
or tampering: the snapshot must not go out, nor replace the running config.
"""

from __future__ import annotations

from typing import Final

from zonegate.core.config import Config

MAX_PROBLEMS: Final = 20  # enough to diagnose; a broken 100k-entity payload must not flood the log


def problems(config: Config) -> list[str]:
    """Every foreign key that does not resolve (at most ``MAX_PROBLEMS``)."""
    return config.dangling_references()[:MAX_PROBLEMS]
