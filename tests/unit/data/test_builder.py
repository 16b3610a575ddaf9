"""Which ranks build datasets: the rule of Megatron-LM's pretrain_gpt.py, written out per case."""

from __future__ import annotations

import pytest
from megatron.core import parallel_state

from srp_megatron.data.builder import BuildRanks, is_built_on_rank


@pytest.fixture
def layout(monkeypatch):
    """A fake parallel layout: tensor rank, pipeline rank of `pp` stages, virtual stages (None: no VPP)."""
    state = {"tp_rank": 0, "pp_rank": 0, "pp": 1, "vpp": None}
    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_rank", lambda: state["tp_rank"])

    def first(ignore_virtual=True, vp_stage=None):
        if not ignore_virtual and state["vpp"] is not None and vp_stage != 0:
            return False
        return state["pp_rank"] == 0

    def last(ignore_virtual=True, vp_stage=None):
        if not ignore_virtual and state["vpp"] is not None and vp_stage != state["vpp"] - 1:
            return False
        return state["pp_rank"] == state["pp"] - 1

    monkeypatch.setattr(parallel_state, "is_pipeline_first_stage", first)
    monkeypatch.setattr(parallel_state, "is_pipeline_last_stage", last)
    return state


@pytest.mark.parametrize(
    "tp_rank, pp_rank, pp, vpp, vp_stage, middle, data_stages",
    [
        (0, 0, 1, None, None, False, True),  # one stage: TP rank 0 builds
        (1, 0, 1, None, None, False, False),  # other TP ranks receive by broadcast
        (0, 0, 4, None, None, False, True),  # first stage: tokens
        (0, 3, 4, None, None, False, True),  # last stage: labels
        (0, 1, 4, None, None, False, False),  # a middle stage reads no data
        (0, 1, 4, None, None, True, True),  # ... unless MTP layers may sit there
        (1, 1, 4, None, None, True, False),  # never on TP rank > 0
        (0, 0, 2, 2, 0, False, True),  # first virtual stage of the first rank
        (0, 0, 2, 2, 1, False, False),  # its second virtual stage is a middle stage
        (0, 1, 2, 2, 1, False, True),  # last virtual stage of the last rank
        (0, 0, 2, 2, None, False, True),  # the whole rank (no vp_stage): first stage
    ],
)
def test_build_rank_rule(layout, tp_rank, pp_rank, pp, vpp, vp_stage, middle, data_stages):
    layout.update(tp_rank=tp_rank, pp_rank=pp_rank, pp=pp, vpp=vpp)
    assert is_built_on_rank(BuildRanks.data_stages, vp_stage, middle) is data_stages
    assert is_built_on_rank(BuildRanks.every, vp_stage, middle) is True
