"""The `srp` command: subcommands listed, overrides anywhere on the line, user errors as one line and exit 2."""

from __future__ import annotations

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
