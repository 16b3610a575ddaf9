"""The `srp` command: subcommands listed, overrides anywhere on the line, user errors as one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from srp_megatron.cli import COMMANDS, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_overrides_may_follow_flags(capsys):
    # plan needs no data; an override after the flags must reach the config (vocab_size is required for tiny).
    assert main(["plan", "tiny-cpu", "--gpus", "1", "--gpu", "h100-80gb", "model.vocab_size=1000"]) == 0
    assert "parameters:" in capsys.readouterr().out


def test_user_errors_are_one_line_with_exit_2(capsys):
    assert main(["plan", "tiny-cpu", "--gpus", "1", "training.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("srp plan: error: ") and "training.bogus" in err and "Traceback" not in err


def test_unknown_arguments_are_refused():
    with pytest.raises(SystemExit) as exc:
        main(["plan", "tiny-cpu", "--gpus", "1", "--no-such-flag"])
    assert exc.value.code == 2


def test_every_subcommand_has_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert f"usage: srp {name}" in capsys.readouterr().out


def _run(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_command_modules_are_light():
    # Importing every command module loads no heavy library: each imports its implementation inside main().
    _run("import importlib, sys\n"
         "from srp_megatron.cli import COMMANDS\n"
         "for module, _ in COMMANDS.values(): importlib.import_module(module)\n"
         "heavy = {m.split('.')[0] for m in sys.modules} & {'torch', 'megatron', 'transformers', 'numpy', 'pyarrow',"
         " 'omegaconf', 'tokenizers'}\n"
         "assert not heavy, heavy\n")


def test_top_level_help_imports_no_command_module():
    _run("import sys\n"
         "from srp_megatron.cli import main\n"
         "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
         "loaded = sorted(m for m in sys.modules if m.startswith('srp_megatron.cli.'))\n"
         "assert not loaded, loaded\n")
