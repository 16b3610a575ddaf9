"""The wheel carries the presets: built, installed non-editable into a fresh virtualenv, and run from another
directory, `srp label`, `srp render`, `srp pretrain tiny-cpu` and `srp plan` find `conf/` inside the package.

The fresh virtualenv gets the dependencies from this one through a ``.pth`` file (no downloads); the editable
install of this checkout is not visible there (a ``.pth`` added directory's own ``.pth`` files are not run), so
``srp_megatron`` is imported from the installed wheel.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from pretrain_helpers import cpu_only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(cmd: list[str], cwd: str, **kw) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> str:
    """The bin directory of a fresh virtualenv with the wheel of this checkout installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src)
    for name in ("srp_megatron", "conf"):  # srp_megatron/conf is a link to ../conf: keep it one
        shutil.copytree(os.path.join(ROOT, name), src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
          str(src)], cwd=str(tmp))
    (wheel,) = glob.glob(str(tmp / "dist" / "srp_megatron-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=str(tmp))
    (site,) = glob.glob(str(venv / "lib" / "python*" / "site-packages"))
    with open(os.path.join(site, "deps.pth"), "w", encoding="utf-8") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=str(tmp))
    return str(venv / "bin")


@cpu_only
@pytest.mark.slow
def test_installed_wheel_runs_the_pipeline_from_another_directory(installed, tiny_tokenizer_dir, demo_jsonl,
                                                                   tmp_path):
    work = str(tmp_path)
    py, srp = os.path.join(installed, "python"), os.path.join(installed, "srp")
    where = _run([py, "-c", "import srp_megatron, srp_megatron.config.loader as l; print(srp_megatron.__file__);"
                  "print(l.resolve_preset('keyword', 'label'))"], cwd=work).split()
    assert all(p.startswith(os.path.dirname(installed)) for p in where), where  # the wheel, not this checkout
    env = {**os.environ, "PYTHONPATH": ""}
    _run([srp, "label", demo_jsonl, "--out", "labels", "--config", "keyword", "--no-progress"], cwd=work, env=env)
    assert json.load(open(os.path.join(work, "labels", "manifest.json")))["complete"]
    _run([srp, "render", "labels", "--config", "filter_document", "--tokenizer", tiny_tokenizer_dir, "--out",
          "data/fdoc", "progress=false"], cwd=work, env=env)
    assert json.load(open(os.path.join(work, "data", "fdoc.json")))["options"]["arm"]["level"] == "document"
    _run([srp, "render", "labels", "--tokenizer", tiny_tokenizer_dir, "--out", "data/srp", "progress=false"],
         cwd=work, env=env)
    _run([srp, "pretrain", "tiny-cpu", "data.paths=[data/srp]", "training.train_iters=2", "scheduler.warmup_iters=1",
          "training.eval_interval=0", "logging.run_dir=run", "logging.log_interval=1", "logging.tensorboard=false",
          "checkpoint.save_at_end=false"], cwd=work, env=env)
    assert [json.loads(line)["step"] for line in open(os.path.join(work, "run", "metrics.jsonl"))] == [1, 2]
    out = _run([srp, "plan", "tiny-cpu", "data.paths=[data/srp]", "--gpus", "1"], cwd=work, env=env)
    assert "verdict" in out
