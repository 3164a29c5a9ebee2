"""Plugin discovery: every package is a plugin with a pure schema and one handler class."""

from __future__ import annotations

import subprocess
import sys

from zonegate.plugins.bundled import BUNDLED_PRIORITIES
from zonegate.plugins.registry import HANDLERS
from zonegate.plugins.schemas import SCHEMAS, plugin_packages


def test_every_package_has_a_schema_and_a_handler_of_the_same_name() -> None:
    assert plugin_packages()
    assert sorted(SCHEMAS) == sorted(HANDLERS)
    for name, handler in HANDLERS.items():
        assert name == handler.NAME
        # Kong's priorities, as GET / shows them.
        assert BUNDLED_PRIORITIES.get(name, handler.PRIORITY) == handler.PRIORITY


def test_schemas_load_without_any_io_library() -> None:
    # import-linter cannot see the dynamic imports that find plugin schemas: check it for real.
    probe = (
        "import sys, zonegate.core.entities, zonegate.core.declarative;"
        "print(sorted({'asyncio','ssl','nats','asyncpg','lmdb','aiohttp','uvloop'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
