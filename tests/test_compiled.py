"""The hot path runs compiled (mypyc) wherever the project was installed with a C compiler, and a
stale build (a ``.py`` edited after its ``.so`` was built) is reported, never silently run."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import zonegate
from zonegate import compiled

EXTENSION_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


def test_every_hot_path_module_runs_compiled() -> None:
    if os.environ.get("ZONEGATE_COMPILE") == "0":
        pytest.skip("installed with ZONEGATE_COMPILE=0")
    assert compiled.hot_path_status() == dict.fromkeys(compiled.HOT_PATH_MODULES, "compiled")
    # And what is imported is the extension, not the source beside it.
    from zonegate.data_plane import exchange

    assert exchange.__file__ is not None and exchange.__file__.endswith(EXTENSION_SUFFIX)


def test_version_all_says_how_the_hot_path_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zonegate", "version", "--all"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    version, hot_path = result.stdout.splitlines()
    assert version == zonegate.__version__
    assert hot_path == compiled.summary()
    assert hot_path.startswith("hot path: ")


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable package ``zg_fake`` with a module ``mod`` as source only."""
    root = tmp_path / "zg_fake"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "zg_fake", raising=False)  # another test's package of that name
    return root


def test_a_module_with_only_its_source_is_interpreted(package: Path) -> None:
    assert compiled.module_state("zg_fake.mod") == "interpreted"


def test_an_extension_newer_than_its_source_is_compiled_and_an_older_one_stale(package: Path) -> None:
    # find_spec only locates: an empty file named as an extension is enough to be chosen first.
    extension = package / f"mod{EXTENSION_SUFFIX}"
    extension.write_bytes(b"")
    source = package / "mod.py"
    os.utime(source, (1_000_000, 1_000_000))
    os.utime(extension, (2_000_000, 2_000_000))
    assert compiled.module_state("zg_fake.mod") == "compiled"
    os.utime(source, (3_000_000, 3_000_000))
    assert compiled.module_state("zg_fake.mod") == "stale"


def test_a_rebuild_counts_by_the_shared_library_when_the_module_shim_kept_its_time(package: Path) -> None:
    # mypyc puts a module's code in one shared ``*__mypyc`` library beside the top-level package;
    # the module's own extension is a shim that a rebuild may leave with its old time.
    extension = package / f"mod{EXTENSION_SUFFIX}"
    extension.write_bytes(b"")
    shared = package.parent / f"0123abcd__mypyc{EXTENSION_SUFFIX}"
    shared.write_bytes(b"")
    os.utime(extension, (1_000_000, 1_000_000))
    os.utime(package / "mod.py", (2_000_000, 2_000_000))
    os.utime(shared, (3_000_000, 3_000_000))
    assert compiled.module_state("zg_fake.mod") == "compiled"
    os.utime(package / "mod.py", (4_000_000, 4_000_000))
    assert compiled.module_state("zg_fake.mod") == "stale"
