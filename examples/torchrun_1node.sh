#!/usr/bin/env bash
# SRP pretraining of the SmolLM2-1.7B shape on one node with 8 GPUs (conf/pretrain/smollm2-1.7b-srp.yaml).
#
#   examples/torchrun_1node.sh /data/srp/fineweb_edu_srp [key=value ...]
#
# DATA_PREFIX is what `srp render ... --arm srp --out DATA_PREFIX` wrote (PREFIX.bin/.idx, PREFIX_spans.*,
# PREFIX.json); the tokenizer recorded in PREFIX.json is used unless data.tokenizer=... is given.
# Extra key=value arguments override the config, e.g. training.train_iters=50000 logging.wandb_project=srp.
# Rerunning the same command resumes from RUN_DIR/checkpoints (checkpoint.resume=auto).
# Environment: NPROC (GPUs, default 8), CONFIG (default smollm2-1.7b-srp), RUN_DIR, GPU (for srp plan).
set -euo pipefail

DATA_PREFIX=${1:?usage: $0 DATA_PREFIX [key=value ...]}
shift
NPROC=${NPROC:-8}
CONFIG=${CONFIG:-smollm2-1.7b-srp}
RUN_DIR=${RUN_DIR:-runs/${CONFIG}}
GPU=${GPU:-h100-80gb}

# Megatron-LM's setting for its communication/compute ordering (needed with sequence parallelism).
export CUDA_DEVICE_MAX_CONNECTIONS=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1

# Memory and throughput estimate (refuses impossible layouts and ones that do not fit, before any GPU time).
srp plan "$CONFIG" --gpus "$NPROC" --gpu "$GPU" "data.paths=[$DATA_PREFIX]" "$@"

exec torchrun --standalone --nproc_per_node "$NPROC" -m srp_megatron.cli pretrain "$CONFIG" \
    "data.paths=[$DATA_PREFIX]" "logging.run_dir=$RUN_DIR" "$@"
