"""``srp pretrain`` step time: the SRP loss policy vs a plain all-ones loss mask, side by side in one run.

Two trainers of the ``tiny-cpu`` model (2 layers, width 64, FP32, one process, one intra-op thread) on
the same rendered SRP corpus (demo documents -> ``srp label`` keyword labeler -> ``srp render``):

- SRP: ``loss_policy=reflection_context`` (reflections masked out of the loss), span types read and
  broadcast with every micro-batch, per-span losses reduced and logged;
- plain: ``loss_policy=paper`` (loss on every token: the all-ones mask), no span types, total loss only.

Both read their data in the training process (``num_workers=0``), so the dataset's policy work is inside
the timed step. Single steps alternate ABBA (SRP, plain, plain, SRP, ...) so that the machine's load
changes hit both alike; the overhead is the median of the paired per-step ratios. Target: <= 2%.

    .venv/bin/python bench/bench_step.py [--quick] [--work DIR]

Exit status 1 when the target is missed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

TARGET_OVERHEAD = 0.02


def build_corpus(work: str, num_docs: int) -> str:
    """Tokenizer, labels and the rendered ``srp`` arm of ``num_docs`` demo documents; returns the prefix."""
    from srp_megatron.prep.demo_corpus import demo_documents, write_demo_jsonl
    from srp_megatron.prep.label.stage import LabelConfig, run_label
    from srp_megatron.prep.render.stage import RenderConfig, render
    from srp_megatron.prep.tokenizer import TokenizerConfig, train_bpe_tokenizer

    texts = [d["text"] for d in demo_documents(300, seed=1234)]
    texts += [" <think> Safe </think> ", " <think> Unsafe: Violent </think> "] * 50
    tokenizer = train_bpe_tokenizer(texts, os.path.join(work, "tokenizer"), vocab_size=1024)
    jsonl = write_demo_jsonl(os.path.join(work, "demo.jsonl"), num_docs, seed=7)
    run_label(LabelConfig(inputs=[jsonl], out=os.path.join(work, "labels"), labeler="keyword", progress=False))
    prefix = os.path.join(work, "rendered", "srp")
    render(RenderConfig(labels_dir=os.path.join(work, "labels"), out=prefix,
                        tokenizer=TokenizerConfig(path=tokenizer), progress=False))
    return prefix


def make_trainer(work: str, prefix: str, name: str, steps: int, extra: list[str]):
    """A ``tiny-cpu`` trainer that can run ``steps`` iterations without saving or evaluating."""
    from srp_megatron.train.config import load_pretrain_config
    from srp_megatron.train.trainer import Trainer

    cfg = load_pretrain_config("tiny-cpu", [
        f"data.paths=[{prefix}]", f"logging.run_dir={os.path.join(work, name)}", f"training.train_iters={steps}",
        "training.eval_interval=0", "checkpoint.save_at_end=false", "checkpoint.resume=never",
        "logging.tensorboard=false", "data.num_workers=0", *extra,
    ])
    return Trainer(cfg)


def timed_steps(trainer, n: int) -> float:
    """Mean wall time of ``n`` train steps."""
    start = time.perf_counter()
    for _ in range(n):
        trainer.train_step()
    return (time.perf_counter() - start) / n


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="80 instead of 300 step pairs (about 25 s)")
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level="WARNING")
    import torch

    torch.set_num_threads(1)
    reps, per_rep, warmup = (80, 1, 3) if args.quick else (300, 1, 5)
    with tempfile.TemporaryDirectory(prefix="bench-step-", dir=args.work) as work:
        prefix = build_corpus(work, 300 if args.quick else 600)
        steps = warmup + reps * per_rep
        with make_trainer(work, prefix, "srp", steps,
                          ["data.loss_policy=reflection_context", "data.return_span_types=true"]) as srp, \
                make_trainer(work, prefix, "plain", steps,
                             ["data.loss_policy=paper", "data.return_span_types=false"]) as plain:
            timed_steps(srp, warmup)
            timed_steps(plain, warmup)
            srp_times, plain_times = [], []
            for rep in range(reps):
                order = [(srp, srp_times), (plain, plain_times)]
                for trainer, times in order if rep % 2 == 0 else order[::-1]:
                    times.append(timed_steps(trainer, per_rep))
    ratios = [s / p for s, p in zip(srp_times, plain_times, strict=True)]
    overhead = statistics.median(ratios) - 1.0
    print(f"\nsrp pretrain step time, tiny-cpu model, {reps} interleaved repetitions x {per_rep} steps "
          f"(global batch 8 x 64 tokens, CPU, 1 thread)")
    print(f"{'variant':<44} {'median ms/step':>15} {'min ms/step':>12}")
    print(f"{'plain: paper policy, no span types':<44} {1e3 * statistics.median(plain_times):>15.2f} "
          f"{1e3 * min(plain_times):>12.2f}")
    print(f"{'SRP: reflection_context, per-span losses':<44} {1e3 * statistics.median(srp_times):>15.2f} "
          f"{1e3 * min(srp_times):>12.2f}")
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    ok = overhead <= TARGET_OVERHEAD
    print(f"paired step-time ratio SRP/plain: median {1 + overhead:.4f}, interquartile {q1:.4f}..{q3:.4f} "
          "(the machine's noise)")
    print(f"overhead: {100 * overhead:+.2f}%  target <= {100 * TARGET_OVERHEAD:.0f}%  {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
