"""Shared by the ``srp pretrain`` tests: a rendered SRP corpus made by the real label and render stages,
and in-process tiny training runs that return their logged metrics."""

from __future__ import annotations

import contextlib
import json
import os
import socket

import pytest
import torch

#: Training tests run the CPU path; on a GPU machine run them with the GPUs hidden (CUDA_VISIBLE_DEVICES=).
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-path test: run with CUDA_VISIBLE_DEVICES=")

#: Overrides every test run uses: log every step, no TensorBoard, a fresh run unless a test resumes.
FAST = ["logging.log_interval=1", "logging.tensorboard=false", "training.eval_interval=0", "data.num_workers=0"]


def make_srp_corpus(out_dir: str, tokenizer_dir: str, jsonl: str) -> str:
    """Label ``jsonl`` with the keyword labeler and render the ``srp`` arm; returns the dataset prefix."""
    from srp_megatron.prep.label.stage import LabelConfig, run_label
    from srp_megatron.prep.render.stage import RenderConfig, render
    from srp_megatron.prep.tokenizer import TokenizerConfig

    labels = os.path.join(out_dir, "labels")
    prefix = os.path.join(out_dir, "rendered", "srp")
    run_label(LabelConfig(inputs=[jsonl], out=labels, labeler="keyword", progress=False))
    render(RenderConfig(labels_dir=labels, out=prefix, tokenizer=TokenizerConfig(path=tokenizer_dir), progress=False))
    return prefix


@contextlib.contextmanager
def single_thread():
    """One intra-op thread: the machine's cores are shared, and oversubscribed matmuls crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def read_metrics(run_dir: str, split: str = "train") -> list[dict]:
    """The ``metrics.jsonl`` records of one split, in order."""
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def train(run_dir: str, prefix: str, *overrides: str, steps: int | None = None) -> list[dict]:
    """Train ``tiny-cpu`` in this process (``steps`` train_steps, or the whole run) and return its records."""
    from srp_megatron.train.config import load_pretrain_config
    from srp_megatron.train.trainer import Trainer

    cfg = load_pretrain_config("tiny-cpu", [f"data.paths=[{prefix}]", f"logging.run_dir={run_dir}", *FAST, *overrides])
    with single_thread(), Trainer(cfg) as trainer:
        if steps is None:
            trainer.train()
        else:
            for _ in range(steps):
                trainer.train_step()
    return read_metrics(run_dir) if steps is None else []


def free_port() -> int:
    """A free TCP port on loopback for a torchrun rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
