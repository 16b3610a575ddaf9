"""One rank of the CP batch test (run by ``torchrun --nproc_per_node 4``): TP=2 x CP=2 on gloo.

TP rank 0 of each CP pair reads a known micro-batch, ``srp_megatron.train.data.get_batch`` broadcasts it
over TP and slices it for this CP rank; the rank saves what it got to ``OUT/rank{RANK}.pt``.
"""

from __future__ import annotations

import os
import sys

import torch


def known_batch(micro_batch_size: int, seq_length: int) -> dict:
    """A micro-batch whose every value names its (sample, position)."""
    pos = torch.arange(seq_length).expand(micro_batch_size, seq_length)
    tokens = 1000 * torch.arange(micro_batch_size).unsqueeze(1) + pos
    return {"tokens": tokens, "labels": tokens + 1, "position_ids": pos.clone(),
            "loss_mask": (pos % 3 != 0).float(), "span_types": pos % 4}


def main(out_dir: str) -> None:
    """Initialise TP=2 x CP=2, fetch one micro-batch through ``get_batch`` and save it."""
    from megatron.core import parallel_state

    from srp_megatron.train.data import BatchSpec, get_batch
    from srp_megatron.train.distributed import init_distributed, teardown

    mbs, seq = 2, 16
    init_distributed(use_cuda=False, tensor_parallel=2, context_parallel=2)
    try:
        spec = BatchSpec(mbs, seq, attention_mask=False, span_types=True)
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        data = iter([known_batch(mbs, seq)]) if tp_rank == 0 else None
        batch = get_batch(data, spec, torch.device("cpu"))
        torch.save({"batch": batch, "tp_rank": tp_rank, "cp_rank": parallel_state.get_context_parallel_rank(),
                    "cp_size": parallel_state.get_context_parallel_world_size()},
                   os.path.join(out_dir, f"rank{os.environ['RANK']}.pt"))
    finally:
        teardown()


if __name__ == "__main__":
    main(sys.argv[1])
