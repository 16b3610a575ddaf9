"""`srp demo` end to end on a small corpus: the counts it reports agree with each other and with the corpus."""

from __future__ import annotations

import json
import os

from srp_megatron.cli import main


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--docs", "120", "--train-iters", "6"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    lab = summary["label"]
    # The corpus writer appends three deliberately bad records.
    assert lab["docs_in"] == 123 and lab["docs_ok"] == 120
    assert lab["docs_skipped"] == {"malformed_json": 1, "empty_text": 1, "missing_text": 1}
    assert sum(lab["labels"].values()) == lab["segments"]
    render = summary["render"]
    assert render["srp"]["reflections"] == lab["segments"] == render["srp_special"]["reflections"]
    assert render["raw"]["reflections"] == 0
    assert render["tag"]["reflections"] == lab["labels"]["unsafe"] + lab["labels"]["controversial"]
    assert render["filter"]["dropped"].get("segments_unsafe", 0) == lab["labels"]["unsafe"]
    pre = summary["pretrain"]
    assert pre["iterations"] == 6 and os.path.exists(pre["plot"])
    assert set(pre["last_span_losses"]) <= {"text", "reflection", "reflection_marker", "unsafe_text"}
