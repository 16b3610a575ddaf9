"""Rendered datasets written directly by tests, and a brute-force reference for samples."""

from __future__ import annotations

import dataclasses

import numpy as np

from srp_megatron.formats.rendered import RenderedDatasetWriter, RenderMetadata, SpanType


@dataclasses.dataclass
class Rendered:
    """A rendered dataset written by a test: its prefix and the documents as written."""

    prefix: str
    tokens: list[np.ndarray]
    spans: list[np.ndarray]


def random_document(rng: np.random.Generator, eod: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Text runs, unsafe text runs and reflections (marker, 1-4 content tokens, marker), EOD last."""
    tokens, spans = [], []
    for _ in range(int(rng.integers(1, 5))):
        n = int(rng.integers(1, 12))
        kind = SpanType.unsafe_text if rng.random() < 0.3 else SpanType.text
        tokens.append(rng.integers(1, vocab, n))
        spans.append(np.full(n, kind))
        body = int(rng.integers(1, 5))
        tokens.append(rng.integers(1, vocab, body + 2))
        spans.append([SpanType.reflection_marker] + [SpanType.reflection] * body + [SpanType.reflection_marker])
    ids = np.concatenate(tokens)
    ids[ids == eod] = eod + 1  # EOD only at the end, so eod_mask_loss and the reference agree exactly
    return np.append(ids, eod).astype(np.uint16), np.append(np.concatenate(spans), SpanType.text).astype(np.uint8)


def write_documents(prefix: str, tokenizer, docs: list[tuple[np.ndarray, np.ndarray]]) -> Rendered:
    """Write ``prefix`` (tokens, span types, ``PREFIX.json`` naming ``tokenizer``) from (tokens, spans) pairs."""
    writer = RenderedDatasetWriter(prefix, tokenizer.vocab_size)
    for tokens, spans in docs:
        writer.add_document(np.asarray(tokens, dtype=np.uint16), np.asarray(spans, dtype=np.uint8))
    writer.finalize()
    RenderMetadata(arm="srp", template="paper", tokenizer=tokenizer.identity, documents=len(docs),
                   tokens=writer.tokens).save(prefix)
    return Rendered(prefix, [np.asarray(d[0]) for d in docs], [np.asarray(d[1]) for d in docs])


def write_rendered(prefix: str, tokenizer, num_docs: int, seed: int) -> Rendered:
    """Write ``num_docs`` random documents to ``prefix``."""
    rng = np.random.default_rng(seed)
    return write_documents(prefix, tokenizer, [random_document(rng, tokenizer.eod, tokenizer.vocab_size)
                                               for _ in range(num_docs)])


def reference_window(rendered: Rendered, stock, idx: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and span codes of sample ``idx``, cut from the documents as written.

    Only the stock ``GPTDataset``'s own index arrays locate the window (its first document, offset,
    last document, end offset); the tokens and spans come from the in-memory documents.
    """
    extra = int(stock.config.add_extra_token_to_sequence)
    i = int(stock.shuffle_index[idx])
    (beg, beg_off), (end, end_off) = stock.sample_index[i].tolist(), stock.sample_index[i + 1].tolist()
    docs = [int(d) for d in stock.document_index[beg : end + 1]]
    tokens = np.concatenate([rendered.tokens[d] for d in docs]).astype(np.int64)
    spans = np.concatenate([rendered.spans[d] for d in docs])
    stop = sum(len(rendered.tokens[d]) for d in docs[:-1]) + end_off + extra
    tokens, spans = tokens[beg_off:stop], spans[beg_off:stop]
    short = stock.config.sequence_length + extra - len(tokens)
    return np.append(tokens, [stock._pad_token_id] * short), np.append(spans, [SpanType.text] * short)


def preset_actions(name: str) -> dict[str, str]:
    """A preset's span type -> action, read straight from its YAML file (not through LossPolicy)."""
    import os

    import yaml

    from srp_megatron.config.loader import CONF_DIR

    with open(os.path.join(CONF_DIR, "loss_policy", f"{name}.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def expected_sample(rendered: Rendered, stock, idx: int, actions: dict[str, str]) -> dict[str, np.ndarray]:
    """``tokens``, ``labels``, ``loss_mask`` and label span codes of sample ``idx``, by brute force.

    The loss at position t is GPTDataset's (EOD input with eod_mask_loss, padding label) times the
    action of the span type of the token position t predicts, i.e. of ``text[t + 1]``.
    """
    config, pad = stock.config, stock._pad_token_id
    text, spans = reference_window(rendered, stock, idx)
    if config.add_extra_token_to_sequence:
        tokens, labels, label_spans = text[:-1], text[1:], spans[1:]
    else:
        tokens, labels, label_spans = text, np.append(text[1:], pad), np.append(spans[1:], SpanType.text)
    loss = np.ones(len(tokens), dtype=np.float32)
    if config.eod_mask_loss:
        loss[tokens == config.tokenizer.eod] = 0
    loss[labels == pad] = 0
    for t, code in enumerate(label_spans):
        if actions.get(SpanType(int(code)).name, "train") == "mask":
            loss[t] = 0
    return {"tokens": np.where(tokens == pad, 0, tokens), "labels": np.where(labels == pad, 0, labels),
            "loss_mask": loss, "span_types": label_spans.astype(np.int64)}
