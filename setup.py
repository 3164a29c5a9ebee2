"""Builds the proxy's hot-path modules (``zonegate.compiled.HOT_PATH_MODULES``) into C extensions
with mypyc; everything else, metadata included, lives in pyproject.toml.

``ZONEGATE_COMPILE=0`` (or a machine with no C compiler) installs the same modules interpreted.
In a checkout, ``make compile`` rebuilds them in place after an edit (``python setup.py
build_ext --inplace``).

mypyc type-checks what it compiles. It runs here with the library imports left untyped
(``--ignore-missing-imports``): a build environment holds setuptools and mypy, not the
project's dependencies, and what the compiled code calls in them is an ordinary Python call
either way. ``make typecheck`` is where the strict check with every library's types happens.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import sysconfig

from setuptools import setup


def hot_path_sources() -> list[str]:
    registry = runpy.run_path(os.path.join("services", "zonegate", "compiled.py"))
    return [os.path.join("services", *name.split(".")) + ".py" for name in registry["HOT_PATH_MODULES"]]


def compiler_found() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(os.environ.get("CC", cc).split()[0]) is not None


def extensions() -> list[object]:
    if os.environ.get("ZONEGATE_COMPILE", "1") == "0":
        print("zonegate: ZONEGATE_COMPILE=0: the hot path stays interpreted", file=sys.stderr)
        return []
    if not compiler_found():
        print("zonegate: no C compiler found: the hot path stays interpreted (slower)", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    options = ["--config-file", os.devnull, "--ignore-missing-imports", "--follow-imports=silent"]
    return list(mypycify([*options, *hot_path_sources()], opt_level="3"))


setup(ext_modules=extensions())
