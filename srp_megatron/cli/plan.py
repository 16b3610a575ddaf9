"""Plan a pretraining run before renting GPUs: parameters, memory per GPU, tokens/s, and a verdict.

    srp plan CONFIG --gpus 64 --gpu h100-80gb [--mfu 0.4] [--json] [key=value ...]

Exit status 0 when the layout fits or is tight (an estimate: launch scripts go on), 1 when it does not. How the
estimate is made: ``srp_megatron/train/plan.py``.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``srp plan``."""
    parser.add_argument("config", help="pretraining YAML (as for srp pretrain)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. parallel.tensor_model_parallel_size=4")
    parser.add_argument("--gpus", type=int, required=True, help="number of GPUs (the world size)")
    parser.add_argument("--gpu", default="h100-80gb",
                        help="GPU type (default: h100-80gb; an unknown name lists the known ones)")
    parser.add_argument("--mfu", type=float, default=0.40, help="model FLOPs utilisation to assume (default: 0.40)")
    parser.add_argument("--headroom", type=float, default=0.05,
                        help="fraction of GPU memory kept free for allocator fragmentation (default: 0.05)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def main(args: argparse.Namespace) -> int:
    """Run ``srp plan``: 0 when the layout fits or is tight (an estimate; launch scripts go on), 1 when it does not."""
    from srp_megatron.train.plan import format_report, plan_from_config

    report = plan_from_config(args.config, args.overrides, gpus=args.gpus, gpu=args.gpu, mfu=args.mfu,
                              headroom=args.headroom)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 1 if report.verdict == "does not fit" else 0
