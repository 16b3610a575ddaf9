"""The pipeline's data outputs equal the recorded golden ones, byte for byte, and so does the loss curve.

``tests/assets/golden/layout_v1.json`` was recorded by ``bench/golden_outputs.py`` before the package was
reorganised; the reorganisation (and any refactoring after it) must not change what ``srp label``,
``srp render`` and ``srp pretrain`` produce. Compared here: the labels' Parquet units, every rendered
``.bin/.idx`` (tokens and span types) and the 20-step ``tiny-cpu`` loss curve. Not compared: stats,
manifests and ``PREFIX.json``, which record the configuration and may gain keys (the script compares those too).

The segmenter's boundary rule is given explicitly (``golden_outputs.BOUNDARY_REGEX``, the paper's
``[.?!。？！\\n]+\\s*``, the default when the record was made): a later change of the default segmenter must
keep this test passing with that rule given explicitly.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from pretrain_helpers import cpu_only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORD = os.path.join(ROOT, "tests", "assets", "golden", "layout_v1.json")


def _golden_module():
    spec = importlib.util.spec_from_file_location("golden_outputs", os.path.join(ROOT, "bench", "golden_outputs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cpu_only
@pytest.mark.slow
def test_outputs_equal_the_golden_record(tmp_path):
    golden = _golden_module()
    assert golden.BOUNDARY_REGEX == r"[.?!。？！\n]+\s*"
    with open(RECORD, encoding="utf-8") as f:
        want = json.load(f)
    got = golden.golden(str(tmp_path), **want["params"])
    data = [k for k in want["files"] if k.endswith(golden.DATA_SUFFIXES)]
    assert len(data) > 100  # units of four label runs and the .bin/.idx pairs of every render
    assert golden.compare(got, want, data_only=True) == []
    assert len(got["loss_curve"]["train"]) == want["params"]["steps"]


def test_compare_reports_every_kind_of_difference():
    golden = _golden_module()
    want = {"files": {"a.parquet": "1", "b.bin": "2", "c.json": "3"}, "loss_curve": {"train": [{"step": 1}]}}
    got = {"files": {"a.parquet": "1", "b.bin": "9", "c.json": "8", "d.idx": "4"}, "loss_curve": {"train": []}}
    assert golden.compare(got, want, data_only=True) == ["extra: d.idx", "changed: b.bin", "loss curve differs"]
    assert "changed: c.json" in golden.compare(got, want)
