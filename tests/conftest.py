"""Shared fixtures: tiny tokenizer and corpus built in the test session (no downloads)."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# CI runs the same examples every time (no flaky landings); `--hypothesis-profile explore` searches afresh.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` when CUDA is absent."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> str:
    """A 1k-token byte-level BPE tokenizer trained on the demo corpus (Hugging Face directory)."""
    from srp_megatron.prep.demo_corpus import demo_documents
    from srp_megatron.prep.tokenizer import train_bpe_tokenizer

    texts = [d["text"] for d in demo_documents(300, seed=1234, cjk_share=0.1)]
    texts += [" <think> Safe </think> ", " <think> Unsafe: Violent </think> "] * 50
    return train_bpe_tokenizer(texts, str(tmp_path_factory.mktemp("tokenizer")), vocab_size=1024)


@pytest.fixture(scope="session")
def demo_jsonl(tmp_path_factory) -> str:
    """200 demo documents as JSONL."""
    from srp_megatron.prep.demo_corpus import write_demo_jsonl

    return write_demo_jsonl(str(tmp_path_factory.mktemp("corpus") / "demo.jsonl"), 200, seed=7)


@pytest.fixture(scope="session")
def srp_prefix(tmp_path_factory, tiny_tokenizer_dir, demo_jsonl) -> str:
    """The demo documents labelled (keyword) and rendered (srp arm): a read-only dataset prefix for training tests."""
    from pretrain_helpers import make_srp_corpus

    return make_srp_corpus(str(tmp_path_factory.mktemp("srp_corpus")), tiny_tokenizer_dir, demo_jsonl)
