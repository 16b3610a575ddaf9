"""The launch scripts in ``examples/`` run as written: on CPU with the tiny config and two processes, the
single-node torchrun script, and the Slurm script under stand-ins for ``scontrol`` and ``srun`` (one node,
torchrun's c10d rendezvous on it, as on a cluster)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from pretrain_helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = ["training.train_iters=3", "training.global_batch_size=8", "training.micro_batch_size=2",
       "scheduler.warmup_iters=1", "training.eval_interval=0", "logging.log_interval=1", "logging.tensorboard=false",
       "checkpoint.save_at_end=false"]


def _write_tool(bin_dir, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_script(tmp_path, script: str, srp_prefix: str, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    """Run ``examples/SCRIPT`` from ``tmp_path`` with this interpreter's ``srp`` and ``torchrun`` first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    # The scripts call the console scripts `srp` and `torchrun`: bind them to this interpreter.
    _write_tool(bin_dir, "srp", f'exec "{sys.executable}" -m srp_megatron.cli "$@"\n')
    _write_tool(bin_dir, "torchrun", f'exec "{sys.executable}" -m torch.distributed.run "$@"\n')
    full_env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
                "CUDA_VISIBLE_DEVICES": "", "CONFIG": "tiny-cpu", "RUN_DIR": str(tmp_path / "run"), "GPU": "h100-80gb",
                "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(["bash", os.path.join(ROOT, "examples", script), srp_prefix, *RUN, *overrides], cwd=tmp_path,
                          env=full_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _train_steps(tmp_path) -> list[int]:
    with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as f:
        return [r["step"] for r in map(json.loads, f) if r["split"] == "train"]


@pytest.mark.slow
def test_torchrun_1node_script(tmp_path, srp_prefix):
    done = _run_script(tmp_path, "torchrun_1node.sh", srp_prefix, {"NPROC": "2"},
                       "parallel.pipeline_model_parallel_size=2")
    assert "verdict: FITS" in done.stdout  # srp plan ran first, on the same config and overrides
    assert "TP=1 PP=2" in done.stderr
    assert _train_steps(tmp_path) == [1, 2, 3]


@pytest.mark.slow
def test_slurm_script_on_one_node(tmp_path, srp_prefix):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # scontrol names this host; srun runs its command once (one task per node), dropping its own options.
    _write_tool(bin_dir, "scontrol", 'echo 127.0.0.1\n')
    _write_tool(bin_dir, "srun", 'while [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    env = {"SLURM_JOB_NODELIST": "node001", "SLURM_NNODES": "1", "SLURM_JOB_ID": "4242", "GPUS_PER_NODE": "2",
           "MASTER_PORT": str(free_port())}
    done = _run_script(tmp_path, "slurm_multinode.sbatch", srp_prefix, env,
                       "parallel.tensor_model_parallel_size=2", "model.make_vocab_size_divisible_by=64")
    assert "verdict: FITS" in done.stdout
    assert "TP=2 PP=1" in done.stderr
    assert os.path.isdir(tmp_path / "logs")  # the #SBATCH --output directory
    assert _train_steps(tmp_path) == [1, 2, 3]
