"""The fast YAML writer reads back, through PyYAML, as exactly what it wrote."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from zonegate.core import declarative, yaml_writer

DATA = Path(__file__).resolve().parents[1] / "data"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False),
    st.text(),
    st.sampled_from(
        ["yes", "No", "ON", "off", "null", "~", "3.0", "1e5", "0x1F", "2026-11-26", "12:30", "", " a"]
    ),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(), documents, max_size=5))
def test_round_trip_through_pyyaml(document: dict[str, Any]) -> None:
    assert yaml.safe_load(yaml_writer.dumps(document)) == document


def test_special_floats() -> None:
    loaded = yaml.safe_load(
        yaml_writer.dumps({"a": float("inf"), "b": float("-inf"), "c": float("nan"), "d": 1e-05})
    )
    assert (
        loaded["a"] == math.inf
        and loaded["b"] == -math.inf
        and math.isnan(loaded["c"])
        and loaded["d"] == 1e-05
    )


def test_a_kong_document_reads_back_as_the_same_config() -> None:
    config = declarative.loads((DATA / "kong-docs-full.yaml").read_text())
    for nested in (False, True):
        text = declarative.dumps(config, nested=nested)
        assert declarative.loads(text) == config
        assert text.startswith('_format_version: "3.0"\n')
