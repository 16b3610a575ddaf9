#!/usr/bin/env bash
# Fetch the wheels tests/gpu/run_gpu_checks.sh installs when the GPU machine lacks them (it has no network):
# megatron-core 0.17-0.19 (Python 3.12 builds, with the compiled dataset helper), omegaconf and its antlr4
# runtime, zstandard. Run from anywhere in the repository, on a machine where pip reaches PyPI; .whl/ (git
# ignored through .git/info/exclude) then travels with the GPU run. PYVER picks the GPU machine's Python.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
PYVER=${PYVER:-3.12}
mkdir -p .whl
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${platforms[@]}" -d .whl "megatron-core>=0.17,<0.20" omegaconf==2.3.0 zstandard==0.25.0
# antlr4-python3-runtime is a source release on PyPI; it is pure Python, so a locally built wheel fits.
"$PY" -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -l .whl
