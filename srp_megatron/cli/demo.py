"""Everything below runs on CPU in a few minutes, on a corpus generated on the fly:

  1. a FineWeb-Edu-like JSONL corpus (with a few deliberately bad records, counted not lost);
  2. a small byte-level BPE tokenizer trained on it (the machines cannot download real ones);
  3. srp label with the keyword labeler;
  4. srp render of every arm: srp (paper and special templates), raw, filter, tag;
  5. srp pretrain of a tiny GPTModel on the SRP arm, with the loss per span type.

Outputs land in --out; the summary is printed and saved as summary.json.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``srp demo``."""
    parser.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    parser.add_argument("--docs", type=int, default=3000, help="documents to generate (default: 3000)")
    parser.add_argument("--train-iters", type=int, default=60, help="tiny-model training steps (0 skips training)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")



def main(args: argparse.Namespace) -> int:
    """Run the demo and print its summary."""
    from srp_megatron.demo import run_demo

    run_demo(args.out, args.docs, args.train_iters, args.seed)
    return 0
