#!/usr/bin/env bash
# The GPU checks of `srp pretrain` for one GPU session (one H100/H200, under 8 minutes), from any directory:
#
#   bash tests/gpu/run_gpu_checks.sh          # results in $OUT (default: /tmp/srp_gpu_checks)
#
# 1. installs only the Python modules missing there, from the wheels in .whl/ (tests/gpu/fetch_wheels.sh
#    fetches them where pip reaches PyPI), into /tmp/srp_site; nothing else;
# 2. records the environment, and says when Transformer Engine is not importable: then megatron's local
#    layer spec is used, the FP8 tests skip and the throughput figure is labelled not comparable;
# 3. runs tests/gpu (BF16 on the TE/local spec, distributed optimizer with overlaps, GPU checkpoint and
#    resume, the FP8 presets where the GPU and TE allow);
# 4. measures SmolLM2-1.7B BF16 throughput at seq 4096 (tests/gpu/gpu_throughput.py) beside Megatron-LM's
#    published 408.8 TFLOP/s/GPU (41% MFU); 12 layers instead of 24 if the full model fails (memory, time).
# Exit status: that of tests/gpu. summary.txt holds the lines to report.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/srp_gpu_checks}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "[gpu-checks] $*" | tee -a "$SUMMARY"; }
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

# 1. Missing modules only (module:wheel-name pairs).
need=()
for pair in megatron.core:megatron_core omegaconf:omegaconf antlr4:antlr4_python3_runtime zstandard:zstandard; do
    "$PY" -c "import ${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
if ((${#need[@]})); then
    wheels=()
    for name in "${need[@]}"; do wheels+=(.whl/"$name"-*.whl); done
    say "installing from .whl/: ${need[*]}"
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/srp_site "${wheels[@]}"; then
        say "FAILED to install ${need[*]}: run tests/gpu/fetch_wheels.sh where pip reaches PyPI and carry .whl/"
        exit 3
    fi
    export PYTHONPATH="$PYTHONPATH:/tmp/srp_site"
fi

# 2. Environment.
"$PY" - <<'EOF' 2>/dev/null | tee "$OUT/env.txt" | tee -a "$SUMMARY"
import platform

import torch

print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(), "| compute capability", torch.cuda.get_device_capability(),
          "| memory %.1f GiB" % (torch.cuda.get_device_properties(0).total_memory / 2**30))
else:
    print("gpu: NONE (torch sees no CUDA device): tests/gpu will skip")
import megatron.core

print("megatron-core", megatron.core.__version__)
try:
    import transformer_engine

    print("transformer-engine", transformer_engine.__version__)
except Exception as exc:  # ImportError, or a broken build
    print(f"transformer-engine NOT importable ({type(exc).__name__}): megatron's local layer spec is used, "
          "FP8 tests skip, the throughput figure is not comparable to Megatron-LM's")
from megatron.core.tensor_parallel import layers

print("apex fused wgrad kernel (gradient_accumulation_fusion):", layers._grad_accum_fusion_available)
EOF

# 3. tests/gpu.
timeout 270 "$PY" -m pytest -q -rs -p no:cacheprovider tests/gpu --junitxml="$OUT/pytest.xml" > "$OUT/pytest.txt" 2>&1
rc_tests=$?
tail -30 "$OUT/pytest.txt"
say "tests/gpu: exit $rc_tests after $(elapsed) s: $(grep -E '[0-9]+ (passed|failed|skipped|error)' "$OUT/pytest.txt" | tail -1)"

# 4. Throughput: the full model, then 12 layers if that failed and time is left.
rc_tp=1
for layers in 24 12; do
    left=$(( 470 - $(elapsed) ))
    if (( left < 90 )); then say "throughput: skipped $layers layers (${left} s left of the 8 minutes)"; break; fi
    timeout "$(( left < 200 ? left : 200 ))" "$PY" tests/gpu/gpu_throughput.py --layers "$layers" \
        --out "$OUT/throughput.json" > "$OUT/throughput_$layers.txt" 2>&1
    rc_tp=$?
    if (( rc_tp == 0 )); then
        grep -v -i warn "$OUT/throughput_$layers.txt" | tail -9 | tee -a "$SUMMARY"
        break
    fi
    why=$(grep -m1 -E 'Error|error|Killed' "$OUT/throughput_$layers.txt" || tail -1 "$OUT/throughput_$layers.txt")
    say "throughput with $layers layers: exit $rc_tp: $why"
    (( rc_tp == 2 )) && break  # no CUDA device: fewer layers will not help
done
say "done in $(elapsed) s (tests/gpu exit $rc_tests, throughput exit $rc_tp)"
exit "$rc_tests"
