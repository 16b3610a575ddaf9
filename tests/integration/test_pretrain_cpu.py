"""End to end on CPU through the ``srp`` command: label -> render -> pretrain lowers the loss, resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _srp(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, on any machine
    done = subprocess.run([sys.executable, "-m", "srp_megatron.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"srp {args[0]} failed:\n{done.stderr[-4000:]}"
    return done


def _records(run_dir: str, split: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.mark.slow
def test_label_render_pretrain_lowers_the_loss_and_resumes(tmp_path, tiny_tokenizer_dir, demo_jsonl):
    labels, prefix, run = str(tmp_path / "labels"), str(tmp_path / "rendered" / "srp"), str(tmp_path / "run")
    _srp("label", demo_jsonl, "--out", labels, "--labeler", "keyword", "--no-progress")
    _srp("render", labels, "--tokenizer", tiny_tokenizer_dir, "--arm", "srp", "--out", prefix, "progress=false")
    common = [f"data.paths=[{prefix}]", f"logging.run_dir={run}", "logging.log_interval=5",
              "training.eval_interval=20", "training.eval_iters=2"]
    done = _srp("pretrain", "tiny-cpu", *common, "training.train_iters=40")

    train, valid = _records(run, "train"), _records(run, "valid")
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30, 35, 40] and [r["step"] for r in valid] == [20, 40]
    first, last = train[0], train[-1]
    assert first["loss/total(nats)"] > 5.0  # about ln(vocab) early on
    assert last["loss/total(nats)"] < 0.6 * first["loss/total(nats)"]
    assert valid[-1]["loss/total(nats)"] < valid[0]["loss/total(nats)"] < first["loss/total(nats)"]
    # The model learns to write reflections: their loss falls from chance too.
    assert valid[-1]["loss/reflection(nats)"] < 0.5 * first["loss/reflection(nats)"]
    assert "tok/s" in done.stderr and "train step 40/40" in done.stderr
    assert os.path.isfile(os.path.join(run, "config.yaml")) and os.listdir(os.path.join(run, "tensorboard"))
    with open(os.path.join(run, "checkpoints", "latest_checkpointed_iteration.txt")) as f:
        assert f.read().strip() == "40"

    # The same command with more iterations resumes at 41 (weights, optimizer, data position, schedule).
    done = _srp("pretrain", "tiny-cpu", *common, "training.train_iters=45", "scheduler.decay_iters=40")
    assert "resumed from" in done.stderr and "iteration 40" in done.stderr
    assert [r["step"] for r in _records(run, "train")][-1] == 45
