"""Train a megatron-core ``GPTModel`` on rendered SRP datasets: ``srp pretrain CONFIG [key=value ...]``.

Run it directly (one process: CPU, or one GPU) or under ``torchrun`` / ``srun`` for several GPUs and
nodes. CONFIG is a YAML file or a name in ``conf/pretrain/`` (``tiny-cpu``, ``smollm2-1.7b-srp``,
``llama3-8b-srp-fp8``, ``llama3-70b-srp``); overrides are dotted keys, e.g. ``training.train_iters=100
data.paths=[/data/fineweb_srp]``. Outputs go to ``logging.run_dir``: the resolved ``config.yaml``,
``metrics.jsonl``, TensorBoard events and checkpoints. A run resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``srp pretrain CONFIG [key=value ...]``."""
    parser.add_argument("config",
                        help="pretraining YAML, or a name in conf/pretrain (tiny-cpu, smollm2-1.7b-srp, ...)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. training.train_iters=100 data.paths=[/data/fineweb_srp]")



def main(args: argparse.Namespace) -> int:
    """Load the config and train."""
    from srp_megatron.train.config import load_pretrain_config
    from srp_megatron.train.trainer import run_pretrain

    run_pretrain(load_pretrain_config(args.config, args.overrides))
    return 0
