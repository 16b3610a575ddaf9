"""Blends of several rendered prefixes through BlendedMegatronDatasetBuilder: same stream as stock, cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.gpt_dataset import GPTDataset
from rendered_corpus import expected_sample, preset_actions

from srp_megatron.data.dataset import ReflectionGPTDataset

SIZES = (300, 30, 30)


@pytest.fixture
def blend_config(rendered, rendered_b, make_config, process_group):
    def make(**options):
        return make_config(rendered.prefix, rendered_b.prefix, weights=[0.7, 0.3], split="90,5,5", **options)

    return make


def _stream(dataset) -> list[list[float]]:
    return [dataset[i]["tokens"].tolist() + dataset[i]["loss_mask"].tolist() for i in range(len(dataset))]


def test_blend_matches_stock_blend_and_reference(rendered, rendered_b, blend_config, build):
    ours = build(ReflectionGPTDataset, blend_config(loss_policy="reflection_context"), SIZES)
    stock = build(GPTDataset, blend_config(stock=True), SIZES)
    actions = preset_actions("reflection_context")
    for split in range(3):
        assert isinstance(ours[split], BlendedDataset) and len(ours[split]) == len(stock[split]) == SIZES[split]
        seen = set()
        for idx in range(len(ours[split])):
            a, b = ours[split][idx], stock[split][idx]
            assert int(a["dataset_id"]) == int(b["dataset_id"])
            assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["labels"], b["labels"])
            # the loss mask by brute force, from the prefix and sample this blend index drew
            dataset_id = int(b["dataset_id"])
            sample = int(stock[split].dataset_sample_index[idx])
            prefix = (rendered, rendered_b)[dataset_id]
            want = expected_sample(prefix, stock[split].datasets[dataset_id], sample, actions)
            np.testing.assert_array_equal(a["loss_mask"].numpy(), want["loss_mask"])
            seen.add(dataset_id)
        assert seen == {0, 1}
    share = float(np.mean([int(ours[0][i]["dataset_id"]) == 0 for i in range(SIZES[0])]))
    assert abs(share - 0.7) < 0.02  # the weights hold


def test_blend_is_deterministic_across_builds_and_cache(blend_config, build, tmp_path):
    first = [_stream(d) for d in build(ReflectionGPTDataset, blend_config(), SIZES)]
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert any("BlendedDataset" in f for f in files) and any("ReflectionGPTDataset" in f for f in files)
    again = [_stream(d) for d in build(ReflectionGPTDataset, blend_config(), SIZES)]  # from the cache
    fresh = [_stream(d) for d in build(ReflectionGPTDataset, blend_config(path_to_cache=str(tmp_path / "b")), SIZES)]
    assert again == first and fresh == first
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == files
