"""Loss policies: presets, mappings with overrides, the lookup table, and the errors."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from rendered_corpus import preset_actions

from srp_megatron.config.loader import CONF_DIR, ConfigError
from srp_megatron.data.loss_policy import LossAction, LossPolicy, LossPolicyConfig
from srp_megatron.errors import SRPError
from srp_megatron.formats.rendered import SpanType

PRESETS = sorted(f[:-5] for f in os.listdir(os.path.join(CONF_DIR, "loss_policy")) if f.endswith(".yaml"))


def test_config_has_one_field_per_span_type_in_code_order():
    assert [f.name for f in dataclasses.fields(LossPolicyConfig)] == [m.name for m in SpanType]


def test_the_required_presets_exist():
    assert {"paper", "reflection_context", "no_unsafe_text", "context_only"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_as_written(name):
    policy = LossPolicy.resolve(name)
    written = preset_actions(name)
    assert policy.name == name
    for span in SpanType:
        action = written.get(span.name, "train")
        assert policy.action(span) == LossAction(action)
        assert policy.table()[int(span)] == (1.0 if action == "train" else 0.0)


def test_preset_meanings():
    assert LossPolicy.resolve("paper").trains_all
    assert LossPolicy.resolve("reflection_context").masked == ["reflection", "reflection_marker"]
    assert LossPolicy.resolve("no_unsafe_text").masked == ["unsafe_text"]
    assert LossPolicy.resolve("context_only").masked == ["reflection", "reflection_marker", "unsafe_text"]
    assert LossPolicy.resolve(None) == LossPolicy.resolve("paper")


def test_mapping_overrides_a_preset():
    policy = LossPolicy.resolve({"preset": "reflection_context", "unsafe_text": "MASK", "reflection": "train"})
    assert policy.name == "reflection_context+overrides"
    assert policy.to_dict() == {"text": "train", "reflection": "train", "reflection_marker": "mask",
                                "unsafe_text": "mask"}
    assert str(policy) == "reflection_context+overrides (masks reflection_marker, unsafe_text)"


def test_mapping_without_preset_trains_what_it_leaves_out():
    policy = LossPolicy.resolve({"reflection_marker": LossAction.mask})
    assert policy.name == "custom" and policy.masked == ["reflection_marker"]


def test_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("unsafe_text: mask\n")
    assert LossPolicy.resolve(str(path)).masked == ["unsafe_text"]


def test_table_rejects_codes_outside_span_types():
    table = LossPolicy.resolve("reflection_context").table()
    np.testing.assert_array_equal(table.take(np.array([0, 1, 2, 3], dtype=np.uint8)), [1, 0, 0, 1])
    with pytest.raises(IndexError):
        table.take(np.array([4], dtype=np.uint8))


def test_unknown_span_type_names_it_and_the_known_ones(tmp_path):
    with pytest.raises(SRPError, match=r"unknown span type 'reflections' \(known: text, reflection, "
                                       r"reflection_marker, unsafe_text\)"):
        LossPolicy.resolve({"reflections": "mask"})
    path = tmp_path / "bad.yaml"
    path.write_text("reflection: mask\nunsafe: mask\n")
    with pytest.raises(SRPError, match=rf"{path}: loss policy names unknown span type 'unsafe'"):
        LossPolicy.resolve(str(path))


def test_unknown_action():
    with pytest.raises(SRPError, match="loss action 'half' for span type 'reflection' is not one of train, mask"):
        LossPolicy.resolve({"reflection": "half"})


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match=r"'nope' not found \(known presets in conf/loss_policy: context_only"):
        LossPolicy.resolve("nope")


def test_other_types_are_refused():
    with pytest.raises(SRPError, match="got int"):
        LossPolicy.resolve(3)
    with pytest.raises(ValueError, match="3 entries, expected 4"):
        LossPolicy("x", (LossAction.train,) * 3)
