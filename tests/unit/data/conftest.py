"""Fixtures for the dataset tests: tokenizer, rendered prefixes, configs, the builder, a gloo group."""

from __future__ import annotations

import pytest
from rendered_corpus import Rendered, write_rendered


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer_dir):
    """The tiny BPE tokenizer (its pad id is its EOD id, like many real ones)."""
    from srp_megatron.prep.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory, tokenizer) -> Rendered:
    """120 random documents (about 2,400 tokens)."""
    return write_rendered(str(tmp_path_factory.mktemp("rendered") / "corpus"), tokenizer, 120, seed=1)


@pytest.fixture(scope="session")
def rendered_b(tmp_path_factory, tokenizer) -> Rendered:
    """A second prefix for blends."""
    return write_rendered(str(tmp_path_factory.mktemp("rendered_b") / "corpus_b"), tokenizer, 90, seed=2)


@pytest.fixture
def make_config(tokenizer, tmp_path):
    """``ReflectionGPTDatasetConfig`` (or the stock config with ``stock=True``) over the given prefixes."""
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    from srp_megatron.data.dataset import ReflectionGPTDatasetConfig

    def make(*prefixes: str, stock: bool = False, weights=None, **overrides):
        options = dict(random_seed=7, sequence_length=31, blend=(list(prefixes), weights), split="100,0,0",
                       path_to_cache=str(tmp_path / "cache"), tokenizer=tokenizer, reset_position_ids=False,
                       reset_attention_mask=False, eod_mask_loss=False)
        options.update(overrides)
        if stock:
            for name in ("loss_policy", "return_span_types", "check_tokenizer"):
                options.pop(name, None)
            return GPTDatasetConfig(**options)
        return ReflectionGPTDatasetConfig(**options)

    return make


@pytest.fixture
def build():
    """Build the three splits through megatron's ``BlendedMegatronDatasetBuilder``."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    def run(cls, config, sizes=(None, None, None)):
        return BlendedMegatronDatasetBuilder(cls, list(sizes), lambda: True, config).build()

    return run


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    """A one-rank gloo group: megatron's BlendedDataset asks for the rank when it writes its cache."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    store = tmp_path_factory.mktemp("gloo") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
