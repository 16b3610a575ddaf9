"""SmolLM2-1.7B BF16 training throughput on one GPU through ``srp pretrain``'s Trainer, next to Megatron-LM's
published 1.7B figure (408.8 TFLOP/s per GPU, 41% MFU, BF16, sequence 4096).

The model is the ``smollm2-1.7b-srp`` preset (24 layers unless ``--layers``) on a demo SRP corpus rendered
with a tokenizer padded to SmolLM2's 49,152 entries, so the logits cost what the real model's do. It times
``--steps`` optimizer steps after ``--warmup`` and reports tokens/s/GPU, TFLOP/s/GPU and MFU (Megatron-LM's
model-FLOPs formula over the GPU's dense BF16 peak; recomputation is not counted). Without Transformer
Engine it runs megatron's local layer spec (unfused attention, selective recompute to fit): such a figure
is labelled and not comparable to the published one.

    python tests/gpu/gpu_throughput.py --out throughput.json [--layers 24] [--steps 6] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

PUBLISHED_TFLOPS, PUBLISHED_MFU = 408.8, 41.0  # Megatron-LM, GPT 1.7B, BF16, seq 4096, H100
SMOLLM2_VOCAB = 49152


def padded_tokenizer(work: str) -> str:
    """A byte-level BPE tokenizer trained on the demo corpus, padded with reserved tokens to 49,152 ids."""
    import shutil

    from tokenizers import AddedToken, Tokenizer

    from srp_megatron.prep.demo_corpus import demo_documents
    from srp_megatron.prep.tokenizer import train_bpe_tokenizer

    base = train_bpe_tokenizer([d["text"] for d in demo_documents(300, seed=1)], os.path.join(work, "tok_base"),
                               vocab_size=1024)
    tok = Tokenizer.from_file(os.path.join(base, "tokenizer.json"))
    size = tok.get_vocab_size(with_added_tokens=True)
    tok.add_special_tokens([AddedToken(f"<|reserved_{i}|>", special=True) for i in range(SMOLLM2_VOCAB - size)])
    out = os.path.join(work, "tok_49152")
    os.makedirs(out)
    tok.save(os.path.join(out, "tokenizer.json"))
    shutil.copy(os.path.join(base, "tokenizer_config.json"), out)
    return out


def srp_corpus(work: str, docs: int) -> str:
    """Label and render ``docs`` demo documents (srp arm); returns the dataset prefix."""
    from srp_megatron.prep.demo_corpus import write_demo_jsonl
    from srp_megatron.prep.label.stage import LabelConfig, run_label
    from srp_megatron.prep.render.stage import RenderConfig, render
    from srp_megatron.prep.tokenizer import TokenizerConfig

    jsonl = write_demo_jsonl(os.path.join(work, "demo.jsonl"), docs, seed=7)
    labels, prefix = os.path.join(work, "labels"), os.path.join(work, "rendered", "srp")
    run_label(LabelConfig(inputs=[jsonl], out=labels, labeler="keyword", progress=False))
    render(RenderConfig(labels_dir=labels, out=prefix, tokenizer=TokenizerConfig(path=padded_tokenizer(work)),
                        progress=False))
    return prefix


def measure(args: argparse.Namespace, prefix: str, run_dir: str) -> dict:
    """Train ``warmup + steps`` iterations; returns the medians of the timed ones and the setup."""
    import torch

    from srp_megatron.train.config import load_pretrain_config
    from srp_megatron.train.metrics import read_metrics
    from srp_megatron.train.model import te_available
    from srp_megatron.train.trainer import Trainer

    te = te_available()
    mbs = args.micro_batch_size or (2 if te else 1)
    recompute = args.recompute or ("none" if te else "selective")
    cfg = load_pretrain_config("smollm2-1.7b-srp", [
        f"data.paths=[{prefix}]", f"logging.run_dir={run_dir}", f"model.num_layers={args.layers}",
        f"training.seq_length={args.seq_length}", f"training.micro_batch_size={mbs}",
        f"training.global_batch_size={args.global_batch_size}", f"training.train_iters={args.warmup + args.steps}",
        f"training.recompute={recompute}", "training.eval_interval=0", "scheduler.warmup_iters=1",
        "checkpoint.save_interval=0", "checkpoint.save_at_end=false", "checkpoint.resume=never",
        "logging.log_interval=1", "logging.tensorboard=false",
    ])
    with Trainer(cfg) as trainer:
        tc = trainer.tconfig
        trainer.train()
    timed = [r for r in read_metrics(run_dir) if r["split"] == "train"][args.warmup:]

    def median(key: str) -> float | None:
        """Median of ``key`` over the timed steps (None when not logged, e.g. an unknown GPU's MFU)."""
        values = [r[key] for r in timed if key in r]
        return statistics.median(values) if values else None

    return {
        "gpu": torch.cuda.get_device_name(), "layer_spec": "transformer_engine" if te else "local (no TE)",
        "layers": args.layers, "seq_length": args.seq_length, "micro_batch_size": mbs,
        "global_batch_size": args.global_batch_size, "recompute": recompute, "timed_steps": len(timed),
        "gradient_accumulation_fusion": tc.gradient_accumulation_fusion,
        "step_s": median("time/step(s)"), "tokens_per_s_per_gpu": median("throughput/tokens_per_s(tok/s)"),
        "tflops_per_gpu": median("throughput/tflops_per_gpu(TFLOP/s)"), "mfu_percent": median("throughput/mfu(%)"),
        "final_loss": timed[-1]["loss/total(nats)"] if timed else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def table(result: dict) -> str:
    """The measurement beside the published figure."""
    comparable = result["layer_spec"] == "transformer_engine" and result["layers"] == 24
    ratio = result["tflops_per_gpu"] / PUBLISHED_TFLOPS if result["tflops_per_gpu"] else float("nan")
    label = "" if comparable else "   (NOT comparable: " + (
        "local layer spec, no Transformer Engine" if result["layer_spec"] != "transformer_engine"
        else f"{result['layers']} of 24 layers") + ")"
    rows = [
        f"SmolLM2-1.7B shape, BF16, seq {result['seq_length']}, {result['layers']} layers, mbs "
        f"{result['micro_batch_size']}, gbs {result['global_batch_size']}, recompute {result['recompute']}, "
        f"{result['layer_spec']} on {result['gpu']}",
        f"{'':<28}{'this run':>14}{'Megatron-LM':>14}",
        f"{'TFLOP/s per GPU':<28}{result['tflops_per_gpu'] or float('nan'):>14.1f}{PUBLISHED_TFLOPS:>14.1f}",
        f"{'MFU (%)':<28}{result['mfu_percent'] or float('nan'):>14.1f}{PUBLISHED_MFU:>14.1f}",
        f"{'tokens/s per GPU':<28}{result['tokens_per_s_per_gpu']:>14,.0f}{'':>14}",
        f"{'step time (s)':<28}{result['step_s']:>14.3f}{'':>14}",
        f"{'peak memory (GiB)':<28}{result['peak_memory_gib']:>14.1f}{'':>14}",
        f"ratio this run / published TFLOP/s: {ratio:.2f}{label}",
    ]
    return "\n".join(rows)


def main() -> int:
    """Build the corpus, measure, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="throughput.json", help="JSON result path")
    parser.add_argument("--layers", type=int, default=24, help="transformer layers (24: the full model)")
    parser.add_argument("--seq-length", type=int, default=4096)
    parser.add_argument("--micro-batch-size", type=int, default=0, help="0: 2 with TE, 1 without")
    parser.add_argument("--global-batch-size", type=int, default=8)
    parser.add_argument("--recompute", default="", help="none|selective|full; empty: none with TE, else selective")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=6, help="timed steps")
    parser.add_argument("--docs", type=int, default=600, help="demo documents in the corpus")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device", file=sys.stderr)
        return 2
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="srp-throughput-") as work:
        prefix = srp_corpus(work, args.docs)
        result = measure(args, prefix, os.path.join(work, "run"))
    result["wall_s"] = time.time() - start
    result["published"] = {"tflops_per_gpu": PUBLISHED_TFLOPS, "mfu_percent": PUBLISHED_MFU}
    print(table(result), flush=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
