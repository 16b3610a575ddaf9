"""Checkpoints: a resumed run reproduces the uninterrupted loss curve step for step; the tracker file."""

from __future__ import annotations

import os

import pytest
from pretrain_helpers import cpu_only, train

from srp_megatron.errors import SRPError
from srp_megatron.train.checkpoint import TRACKER_FILE, checkpoint_path, latest_iteration

RUN = ["training.train_iters=6", "training.global_batch_size=8", "training.micro_batch_size=2",
       "scheduler.warmup_iters=2"]


def _curve(records: list[dict]) -> dict[int, tuple[float, float, float]]:
    return {r["step"]: (r["loss/total(nats)"], r["optim/grad_norm"], r["optim/lr"]) for r in records}


@cpu_only
@pytest.mark.parametrize("precision", ["fp32-cpu", "bf16"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, srp_prefix, precision):
    """bf16: the fp32 master weights travel in the checkpoint (megatron's mixed-precision optimizer)."""
    run = [*RUN, f"precision.preset={precision}"]
    whole = _curve(train(str(tmp_path / "whole"), srp_prefix, *run, "checkpoint.save_at_end=false"))
    assert sorted(whole) == [1, 2, 3, 4, 5, 6]

    split_dir = str(tmp_path / "split")
    # First job: stops after iteration 3 with a checkpoint (as a job near its time limit would).
    first = _curve(train(split_dir, srp_prefix, *run, "training.exit_interval=3"))
    assert sorted(first) == [1, 2, 3]
    assert latest_iteration(os.path.join(split_dir, "checkpoints")) == 3
    # Second job, same command: resumes at iteration 4 with the same weights, optimizer, schedule and data.
    second = _curve(train(split_dir, srp_prefix, *run, "training.exit_interval=3"))
    assert sorted(second) == [1, 2, 3, 4, 5, 6]  # metrics.jsonl is appended to
    for step in range(1, 7):
        assert second[step] == pytest.approx(whole[step], rel=1e-6, abs=1e-7), f"step {step}"
    assert latest_iteration(os.path.join(split_dir, "checkpoints")) == 6


@cpu_only
def test_resume_required_without_checkpoint_fails(tmp_path, srp_prefix):
    with pytest.raises(SRPError, match="checkpoint.resume=required"):
        train(str(tmp_path / "run"), srp_prefix, *RUN, "checkpoint.resume=required", steps=0)


def test_tracker_file(tmp_path):
    assert latest_iteration(str(tmp_path)) is None
    (tmp_path / TRACKER_FILE).write_text("12\n")
    assert latest_iteration(str(tmp_path)) == 12
    assert checkpoint_path(str(tmp_path), 12) == str(tmp_path / "iter_0000012")
    (tmp_path / TRACKER_FILE).write_text("twelve")
    with pytest.raises(SRPError, match=TRACKER_FILE):
        latest_iteration(str(tmp_path))
