"""The ``srp`` command line: one subcommand per pipeline stage, one small module per subcommand.

``COMMANDS`` maps a subcommand to its module in this package and a one-line help. A command module defines
``add_arguments(parser)`` and ``main(args) -> int`` and imports its implementation inside ``main``, so that only
the chosen command's module is imported and ``srp --help`` imports none of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence

from srp_megatron import __version__
from srp_megatron.errors import SRPError

#: name -> (command module, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "label": (
        "srp_megatron.cli.label",
        "Segment documents (JSONL/Parquet) and label every segment safe/controversial/unsafe.",
    ),
    "render": (
        "srp_megatron.cli.render",
        "Render a labels directory into a Megatron .bin/.idx dataset for one arm (srp, raw, filter, ...).",
    ),
    "demo": (
        "srp_megatron.cli.demo",
        "Run the main job end to end on a small corpus generated on the fly (CPU only).",
    ),
    "pretrain": (
        "srp_megatron.cli.pretrain",
        "Pretrain a megatron-core GPTModel on rendered datasets (CPU, or torchrun on GPUs).",
    ),
    "plan": (
        "srp_megatron.cli.plan",
        "Estimate parameters, memory per GPU and tokens/s of a pretraining config on N GPUs.",
    ),
}


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first argument that is one), or None."""
    return next((a for a in argv if a in COMMANDS), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported, to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="srp",
        description="Safety Reflection Pretraining for Megatron-Core. Pipeline: label -> render -> pretrain.",
    )
    parser.add_argument("--version", action="version", version=f"srp-megatron {__version__}")
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default: INFO).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text + "\n\n" + (module.__doc__ or "").strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        # The positional list that takes key=value overrides, so they may also follow the flags.
        lists = [a.dest for a in p._actions if not a.option_strings and a.nargs == "*"]
        p.set_defaults(_main=module.main, _overrides_dest=lists[-1] if lists else None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``srp`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(chosen_command(argv))
    args, extra = parser.parse_known_args(argv)
    dest = getattr(args, "_overrides_dest", None)
    unknown = [e for e in extra if dest is None or "=" not in e or e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        setattr(args, dest, [*(getattr(args, dest) or []), *extra])
    # megatron-core warns at import when TE/Apex are absent; on CPU that is expected, and the trainer says so once.
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    warnings.filterwarnings("ignore", message=".*Apex is not installed.*")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args._main(args) or 0)
    except SRPError as exc:
        print(f"srp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"srp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"srp {args.command}: interrupted", file=sys.stderr)
        return 130
