"""The CPU accommodations' function mode: what it redirects, and that entering it twice changes nothing."""

from __future__ import annotations

import torch
from pretrain_helpers import cpu_only

from srp_megatron.train.cpu import cuda_calls_on_cpu


def _modes() -> int:
    return torch._C._len_torch_function_stack()


@cpu_only
def test_cuda_calls_run_on_cpu_and_the_context_is_reentrant():
    before = _modes()
    with cuda_calls_on_cpu():
        with cuda_calls_on_cpu():  # e.g. a helper that enters it inside the Trainer's
            assert _modes() == before + 1
            t = torch.zeros(2, device="cuda")
            assert t.device.type == "cpu" and t.type() == "torch.cuda.FloatTensor"
            assert t.cuda() is t
        assert _modes() == before + 1 and torch.ones(1).type() == "torch.cuda.FloatTensor"  # the outer one holds
    assert _modes() == before and torch.ones(1).type() == "torch.FloatTensor"
