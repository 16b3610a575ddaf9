"""Two gloo processes under torchrun train like one: TP=2, DP=2 with the distributed optimizer, PP=2 (1F1B)
and PP=2 x VPP=2 (interleaved 1F1B, megatron's own schedules) give the single-process losses, gradient norms
and learning rates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from pretrain_helpers import FAST, cpu_only, free_port, read_metrics, train

pytestmark = cpu_only

# The padded vocabulary must match: 128 x TP=1 here, 64 x TP=2 in the TP=2 run (megatron pads per TP rank).
RUN = ["training.train_iters=4", "training.global_batch_size=8", "training.micro_batch_size=4",
       "scheduler.warmup_iters=1", "checkpoint.save_at_end=false", "model.make_vocab_size_divisible_by=128"]


def _torchrun(run_dir: str, srp_prefix: str, *overrides: str, nproc: int = 2) -> str:
    """Run tiny-cpu in ``nproc`` processes; returns their log (stderr)."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--master_port", str(free_port()),
        "-m", "srp_megatron.cli", "pretrain", "tiny-cpu", f"data.paths=[{srp_prefix}]", f"logging.run_dir={run_dir}",
        *FAST, *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


def _continue_from_one_step(tmp_path, srp_prefix: str, run: list[str], *layout: str,
                            nproc: int = 2) -> tuple[list[dict], str, str]:
    """One process trains one step and saves; it and a ``nproc``-process ``layout`` continue from that checkpoint.

    Returns the one-process records of the continued steps, the two-process run directory and its log.
    Fresh weights cannot be compared across layouts: megatron seeds each pipeline stage differently and its
    CPU initialisation splits the gated fc1 master weight contiguously, pairing gate and up rows differently
    at TP=2 than at TP=1. dist_checkpointing reshards the checkpoint to the layout.
    """
    one_dir, two_dir = str(tmp_path / "one"), str(tmp_path / "two")
    train(one_dir, srp_prefix, *run, "training.exit_interval=1")  # one step, then a checkpoint
    shutil.copytree(os.path.join(one_dir, "checkpoints"), os.path.join(two_dir, "checkpoints"))
    one = train(one_dir, srp_prefix, *run)[1:]  # steps 2.. (metrics.jsonl also holds step 1)
    log = _torchrun(two_dir, srp_prefix, *run, *layout, nproc=nproc)
    assert "resumed from" in log
    assert [r["step"] for r in one] == list(range(2, 2 + len(one)))
    return one, two_dir, log


def _assert_same_curves(expected: list[dict], actual: list[dict]) -> None:
    assert [r["step"] for r in actual] == [r["step"] for r in expected]
    for a, b in zip(expected, actual, strict=True):
        for key in ("loss/total(nats)", "loss/text(nats)", "optim/grad_norm", "optim/lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (a["step"], key)
        assert b["tokens/loss_trained(count)"] == a["tokens/loss_trained(count)"]


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [[], ["parallel.overlap_grad_reduce=true", "parallel.overlap_param_gather=true"]],
                         ids=["plain", "overlapped"])
def test_dp2_distributed_optimizer_matches_one_process(tmp_path, srp_prefix, overlap):
    """Same global batch split over two data-parallel ranks; gradients reduce-scattered, optimizer state sharded,
    parameters all-gathered (overlapped: in backward hooks and before the next forward, as on GPU)."""
    one = train(str(tmp_path / "one"), srp_prefix, *RUN)
    log = _torchrun(str(tmp_path / "dp2"), srp_prefix, *RUN, "parallel.use_distributed_optimizer=true", *overlap)
    assert "DP=2" in log
    _assert_same_curves(one, read_metrics(str(tmp_path / "dp2")))
    assert one[-1]["loss/total(nats)"] < one[0]["loss/total(nats)"]  # it trained


@pytest.mark.slow
@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tp2", "tp2-sp"])
def test_tp2_matches_tp1(tmp_path, srp_prefix, sequence_parallel):
    """TP=2 (vocabulary padded to 64 per rank, 128 in all) continues a TP=1 checkpoint like TP=1 does. With
    sequence parallelism the norms see half the sequence each and their gradients are summed over TP; that run
    has the Qwen3 features too (GQA, QK-norm, whose weights see half the heads per rank)."""
    run = [*RUN, "model.qk_layernorm=true", "model.num_query_groups=2"] if sequence_parallel else RUN
    one, two_dir, log = _continue_from_one_step(tmp_path, srp_prefix, run, "parallel.tensor_model_parallel_size=2",
                                                "model.make_vocab_size_divisible_by=64",
                                                f"parallel.sequence_parallel={str(sequence_parallel).lower()}")
    assert "TP=2" in log
    _assert_same_curves(one, read_metrics(two_dir))
    assert one[-1]["loss/total(nats)"] < one[0]["loss/total(nats)"]  # it trained


def _assert_same_validation(expected_dir: str, actual_dir: str) -> None:
    """Validation at step 3 (the interval) and at the end: the same losses."""
    expected, actual = read_metrics(expected_dir, "valid"), read_metrics(actual_dir, "valid")
    assert [r["step"] for r in actual] == [r["step"] for r in expected] == [3, 4]
    for a, b in zip(expected, actual, strict=True):
        assert b["loss/total(nats)"] == pytest.approx(a["loss/total(nats)"], rel=1e-5)


# Four micro-batches of 2 so the pipeline schedules go through warm-up, steady 1F1B and cool-down; validation
# at step 3 and at the end runs the forward-only schedule.
PIPELINE_RUN = [*RUN, "training.micro_batch_size=2", "training.eval_interval=3", "training.eval_iters=1"]


@pytest.mark.slow
@pytest.mark.parametrize(("layers", "layout", "banner"), [
    (2, ["parallel.pipeline_model_parallel_size=2"], "TP=1 PP=2 VPP=None"),
    (4, ["parallel.pipeline_model_parallel_size=2", "parallel.virtual_pipeline_model_parallel_size=2"],
     "TP=1 PP=2 VPP=2"),
    (4, ["parallel.tensor_model_parallel_size=2", "model.make_vocab_size_divisible_by=64",
         "parallel.pipeline_model_parallel_size=2", "parallel.virtual_pipeline_model_parallel_size=2"],
     "TP=2 PP=2 VPP=2"),
], ids=["pp2-1f1b", "pp2-vpp2-interleaved", "tp2-pp2-vpp2-4proc"])
def test_pipeline_matches_one_process(tmp_path, srp_prefix, layers, layout, banner):
    """Tied embeddings span the first and last stage: their gradients meet in megatron's embedding group.
    With TP=2 (four processes, as the Llama 3 70B preset composes them) each stage's TP rank 0 reads the data
    and broadcasts it."""
    run = [*PIPELINE_RUN, f"model.num_layers={layers}"]
    nproc = 4 if "parallel.tensor_model_parallel_size=2" in layout else 2
    one, two_dir, log = _continue_from_one_step(tmp_path, srp_prefix, run, *layout, nproc=nproc)
    assert banner in log
    _assert_same_curves(one, read_metrics(two_dir))
    _assert_same_validation(str(tmp_path / "one"), two_dir)
    assert one[-1]["loss/total(nats)"] < one[0]["loss/total(nats)"]  # it trained


@pytest.mark.slow
def test_interleaved_pipeline_variants_match_the_plain_interleaved_run(tmp_path, srp_prefix):
    """Against PP=2 x VPP=2 x DP=1 (the same stages, seeds and weights):
    - PP=2 x VPP=2 x DP=2 (four processes) with the distributed optimizer and both overlaps (the interleaved
      schedule's aligned ``param_sync_func``);
    - full activation recompute of the first layer of every chunk, as the Llama 3 70B preset does (middle
      chunks rebuild their causal mask in backward)."""
    run = [*PIPELINE_RUN, "model.num_layers=4", "parallel.pipeline_model_parallel_size=2",
           "parallel.virtual_pipeline_model_parallel_size=2", "checkpoint.save_at_end=false"]
    _torchrun(str(tmp_path / "plain"), srp_prefix, *run)
    log = _torchrun(str(tmp_path / "dp2"), srp_prefix, *run, "parallel.use_distributed_optimizer=true",
                    "parallel.overlap_grad_reduce=true", "parallel.overlap_param_gather=true", nproc=4)
    assert "PP=2 VPP=2 CP=1 DP=2" in log
    _torchrun(str(tmp_path / "recompute"), srp_prefix, *run, "training.recompute=full",
              "training.recompute_num_layers=1")
    plain = read_metrics(str(tmp_path / "plain"))
    assert [r["step"] for r in plain] == [1, 2, 3, 4]
    for variant in ("dp2", "recompute"):
        _assert_same_curves(plain, read_metrics(str(tmp_path / variant)))
        _assert_same_validation(str(tmp_path / "plain"), str(tmp_path / variant))


@pytest.mark.slow
def test_dp2_fully_parallel_checkpoint_resumes_the_one_process_curve(tmp_path, srp_prefix):
    """DP=2 saves with megatron's fully parallel strategy (each DP rank writes part), stops after step 2, and
    the resumed job continues the uninterrupted one-process curve."""
    one = train(str(tmp_path / "one"), srp_prefix, *RUN)
    for _ in range(2):  # the same command twice, as a job resubmitted after its time limit
        log = _torchrun(str(tmp_path / "dp2"), srp_prefix, *RUN, "training.exit_interval=2",
                        "checkpoint.fully_parallel_save=true")
    assert "DP=2" in log and "resumed from" in log and "iteration 2" in log
    _assert_same_curves(one, read_metrics(str(tmp_path / "dp2")))
