"""The README's settings reference is held to ``settings.SETTING_SPECS``, so it cannot go stale.

The section "Settings reference" of README.md has one table row per setting:
``| `ZONEGATE_<NAME>` | default | Kong equivalent | meaning |``. The default is the spec's text in
backquotes, or ``not set`` when the spec has none; the Kong column is the spec's ``kong_name`` in
backquotes, or an em dash when Kong has no such setting.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zonegate.settings import SETTING_SPECS, SettingSpec

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Settings reference"
NOT_SET = "not set"
NO_KONG = "—"
_ROW = re.compile(r"^\|\s*`(ZONEGATE_[A-Z0-9_]+)`\s*\|")


def _section(text: str) -> str:
    start = text.find(f"\n{SECTION}\n")
    assert start >= 0, f"README.md has no {SECTION!r} section"
    end = text.find("\n## ", start + len(SECTION) + 2)
    return text[start : end if end >= 0 else len(text)]


def _cells(line: str) -> list[str]:
    # Cells are split on '|' outside backquotes: a default or a meaning may quote a '|'.
    cells: list[str] = []
    current: list[str] = []
    quoted = False
    for char in line.strip().strip("|"):
        if char == "`":
            quoted = not quoted
        if char == "|" and not quoted:
            cells.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    cells.append("".join(current).strip())
    return cells


def readme_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in _section(README.read_text(encoding="utf-8")).splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        name = match[1]
        assert name not in rows, f"{name} is listed twice in the README settings table"
        cells = _cells(line)
        assert len(cells) == 4, f"{name}: expected 4 cells (setting, default, Kong, meaning), got {cells}"
        rows[name] = cells
    return rows


def expected_default(spec: SettingSpec) -> str:
    return f"`{spec.default}`" if spec.default else NOT_SET


def expected_kong(spec: SettingSpec) -> str:
    return f"`{spec.kong_name}`" if spec.kong_name else NO_KONG


def test_the_table_lists_exactly_the_settings_the_code_defines() -> None:
    listed = set(readme_rows())
    defined = {spec.env_name for spec in SETTING_SPECS}
    assert not defined - listed, f"settings missing from README.md: {sorted(defined - listed)}"
    assert not listed - defined, f"README.md lists settings the code lacks: {sorted(listed - defined)}"


@pytest.mark.parametrize("spec", SETTING_SPECS, ids=lambda spec: spec.env_name)
def test_each_row_has_the_codes_default_and_kong_name(spec: SettingSpec) -> None:
    row = readme_rows().get(spec.env_name)
    assert row is not None, f"{spec.env_name} is missing from README.md"
    _, default, kong, meaning = row
    assert default == expected_default(spec), f"{spec.env_name}: README default {default!r}"
    assert kong == expected_kong(spec), f"{spec.env_name}: README Kong equivalent {kong!r}"
    assert meaning, f"{spec.env_name}: the meaning cell is empty"


def test_the_cell_splitter_keeps_quoted_bars() -> None:
    assert _cells("| `A` | `x | y` | — | one |") == ["`A`", "`x | y`", "—", "one"]
