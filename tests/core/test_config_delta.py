"""Config deltas: apply(a, diff(a, b)) == b, through JSON and back, and bad documents refused."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.core import canonical, consistency, declarative
from zonegate.core.config import Config
from zonegate.core.config_delta import ConfigDelta, DeltaError, apply, diff

from .test_declarative_properties import PROPERTY_SETTINGS, Model, models, render_nested


def load(model: Model) -> Config:
    return declarative.load(render_nested(model))


@PROPERTY_SETTINGS
@given(models(), models())
def test_applying_the_diff_gives_the_other_config(first: Model, second: Model) -> None:
    before, after = load(first), load(second)
    delta = diff(before, after)
    # As it travels: JSON, then parsed back on the data plane.
    received = ConfigDelta.from_document(json.loads(json.dumps(delta.document())))
    applied = apply(before, received)
    assert applied == after
    assert canonical.encode_config(applied) == canonical.encode_config(after)
    assert len(diff(after, applied)) == 0


@PROPERTY_SETTINGS
@given(models())
def test_a_config_shares_its_unchanged_entities(model: Model) -> None:
    config = load(model)
    routes = config.of("routes")
    if not routes:
        return
    changed = Config.build(
        {
            kind: [dict(e, tags=["changed"]) if e is routes[0] else e for e in config.of(kind)]
            for kind in config.entities
        }
    )
    delta = diff(config, changed)
    assert delta.upserts == {"routes": (changed.by_id("routes")[routes[0]["id"]],)} and not delta.deletes
    applied = apply(config, delta)
    assert applied == changed
    untouched = [e for e in applied.of("routes") if e["id"] != routes[0]["id"]]
    assert all(any(e is original for original in routes) for e in untouched)


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        {"upserts": {}},
        {"upserts": {}, "deletes": {}, "extra": 1},
        {"upserts": {"nope": []}, "deletes": {}},
        {"upserts": {"routes": [{"name": "no id"}]}, "deletes": {}},
        {"upserts": {"routes": "x"}, "deletes": {}},
        {"upserts": {}, "deletes": {"routes": [1]}},
    ],
)
def test_bad_documents_are_refused(document: Any) -> None:
    with pytest.raises(DeltaError):
        ConfigDelta.from_document(document)


@given(st.booleans())
def test_an_empty_delta_changes_nothing(_: bool) -> None:
    config = Config()
    assert apply(config, ConfigDelta()) == config
    assert len(diff(config, config)) == 0


@PROPERTY_SETTINGS
@given(models(), models(), st.randoms(use_true_random=False))
def test_the_delta_check_finds_what_the_whole_check_finds(
    first: Model, second: Model, rng: random.Random
) -> None:
    before, after = load(first), load(second)
    delta = diff(before, after)
    # Break it: drop some upserted or deleted entities, so references may dangle.
    broken = ConfigDelta(
        {kind: tuple(e for e in found if rng.random() < 0.7) for kind, found in delta.upserts.items()},
        {kind: tuple(i for i in ids if rng.random() < 0.7) for kind, ids in delta.deletes.items()},
    )
    for change in (delta, broken):
        applied = apply(before, change)
        assert bool(consistency.delta_problems(applied, change)) == bool(consistency.problems(applied))
