"""Tokenizers for rendering and training: Hugging Face directories and megatron-core tokenizers.

Corpus text is always encoded with special-token matching switched off, so a document that contains
the literal text of a special token (``<|endoftext|>``, a reflection marker) yields ordinary tokens.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class TokenizerKind(enum.StrEnum):
    """Where a tokenizer comes from."""

    auto = "auto"
    huggingface = "huggingface"
    megatron = "megatron"


@dataclass
class TokenizerConfig:
    """How to load a tokenizer."""

    path: str = ""
    """Directory of a Hugging Face tokenizer (``tokenizer.json`` ...) or of a megatron-core tokenizer
    (``tokenizer_metadata.json`` beside the model files)."""
    kind: TokenizerKind = TokenizerKind.auto
    """``auto`` picks ``megatron`` when ``tokenizer_metadata.json`` exists, else ``huggingface``."""
    eod_token: str | None = None
    """Token text used as end-of-document; ``None`` takes the tokenizer's EOS token."""


class Tokenizer:
    """A text tokenizer with the interface megatron's datasets expect (``eod``, ``pad``,
    ``unique_identifiers``) plus fast batch encoding for rendering."""

    def __init__(self, config: TokenizerConfig):
        if not config.path:
            raise ValueError("tokenizer.path is empty: give a tokenizer directory")
        if not os.path.isdir(config.path):
            raise FileNotFoundError(f"tokenizer directory '{config.path}' does not exist")
        self.config = config
        kind = config.kind
        if kind == TokenizerKind.auto:
            has_meta = os.path.exists(os.path.join(config.path, "tokenizer_metadata.json"))
            kind = TokenizerKind.megatron if has_meta else TokenizerKind.huggingface
        self.kind = kind
        self._hf = None  # transformers tokenizer (Hugging Face directories)
        self._backend = None  # tokenizers.Tokenizer for fast batch encoding
        self._megatron = None
        if kind == TokenizerKind.huggingface:
            self._load_hf(config.path)
        else:
            self._load_megatron(config.path)
        self.eod = self._resolve_eod(config.eod_token)

    # -- loading ---------------------------------------------------------------------------------
    def _load_hf(self, path: str) -> None:
        from transformers import AutoTokenizer

        try:
            self._hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # transformers raises many types for a bad directory
            raise ValueError(f"cannot load a Hugging Face tokenizer from '{path}': {exc}") from exc
        if getattr(self._hf, "is_fast", False):
            self._backend = self._hf.backend_tokenizer
            self._backend.encode_special_tokens = True

    def _load_megatron(self, path: str) -> None:
        from megatron.core.tokenizers import MegatronTokenizer

        self._megatron = MegatronTokenizer.from_pretrained(path)
        inner = getattr(self._megatron, "_tokenizer", None)
        hf = getattr(inner, "tokenizer", None)
        if hf is not None and getattr(hf, "is_fast", False):
            self._hf = hf
            self._backend = hf.backend_tokenizer
            self._backend.encode_special_tokens = True

    def _resolve_eod(self, eod_token: str | None) -> int:
        if eod_token is not None:
            ids = self.token_to_id(eod_token)
            if ids is None:
                raise ValueError(f"tokenizer.eod_token '{eod_token}' is not a token of '{self.config.path}'")
            return ids
        if self._megatron is not None:
            return int(self._megatron.eod)
        eos = self._hf.eos_token_id
        if eos is None:
            raise ValueError(
                f"tokenizer '{self.config.path}' has no EOS token: set tokenizer.eod_token to the document separator"
            )
        return int(eos)

    # -- vocabulary ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        if self._hf is not None:
            return len(self._hf)
        return int(self._megatron.vocab_size)

    @property
    def pad(self) -> int:
        """Padding id used by megatron's datasets (the EOD id when the tokenizer has no pad token)."""
        pad = getattr(self._hf, "pad_token_id", None) if self._hf is not None else None
        return int(pad) if pad is not None else self.eod

    def token_to_id(self, token: str) -> int | None:
        """Id of a single token string, or None."""
        if self._backend is not None:
            return self._backend.token_to_id(token)
        vocab = self._megatron.vocab
        return vocab.get(token)

    def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Add dedicated special tokens (idempotent); returns their ids."""
        if self._hf is None:
            raise ValueError("adding special tokens needs a Hugging Face (fast) tokenizer")
        missing = [t for t in tokens if self.token_to_id(t) is None]
        if missing:
            self._hf.add_special_tokens(
                {"additional_special_tokens": list(missing)}, replace_extra_special_tokens=False
            )
            self._backend = self._hf.backend_tokenizer
            self._backend.encode_special_tokens = True
        return [self.token_to_id(t) for t in tokens]

    def special_token_ids(self) -> set[int]:
        """Ids of all special/added tokens (never produced from corpus text)."""
        if self._hf is not None:
            return {int(i) for i in self._hf.all_special_ids} | {
                int(i) for i, tok in self._hf.added_tokens_decoder.items() if tok.special
            }
        return {self.eod}

    # -- encoding --------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS added, special tokens never matched)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of several texts; uses the Rust backend when there is one."""
        if self._backend is not None:
            return [e.ids for e in self._backend.encode_batch_fast(list(texts), add_special_tokens=False)]
        return [list(self._megatron.tokenize(t)) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids, special tokens included."""
        ids = [int(i) for i in ids]
        if self._hf is not None:
            return self._hf.decode(ids, skip_special_tokens=False)
        return self._megatron.detokenize(ids)

    # -- identity --------------------------------------------------------------------------------
    @property
    def identity(self) -> dict:
        """What identifies this tokenizer in rendered datasets: content hash and vocab size."""
        if self._backend is not None:
            content = self._backend.to_str().encode()
        else:
            content = json.dumps(sorted(self._megatron.vocab.items())).encode()
        return {
            "kind": self.kind.value,
            "path": os.path.abspath(self.config.path),
            "sha256": hashlib.sha256(content).hexdigest(),
            "vocab_size": self.vocab_size,
            "eod": self.eod,
        }

    @property
    def unique_identifiers(self) -> OrderedDict:
        """Megatron's dataset cache key material: the tokenizer's content hash, not its path."""
        ident = self.identity
        return OrderedDict(
            [("class", type(self).__name__), ("sha256", ident["sha256"]), ("vocab_size", ident["vocab_size"])]
        )

    def save(self, path: str) -> None:
        """Write a Hugging Face tokenizer directory (e.g. one extended with special tokens)."""
        if self._hf is None:
            raise ValueError("only Hugging Face tokenizers can be saved")
        self._hf.save_pretrained(path)


def load_tokenizer(
    path: str, kind: str | TokenizerKind = TokenizerKind.auto, eod_token: str | None = None
) -> Tokenizer:
    """Load a tokenizer directory."""
    return Tokenizer(TokenizerConfig(path=path, kind=TokenizerKind(kind), eod_token=eod_token))


def train_bpe_tokenizer(
    texts: Iterable[str], out_dir: str, vocab_size: int = 2048, eod_token: str = "<|endoftext|>"
) -> str:
    """Train a small byte-level BPE tokenizer and save it as a Hugging Face directory.

    For tests and the demo: the machines cannot download real tokenizers.
    """
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = RustTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[eod_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(
            {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eod_token, "model_max_length": 1 << 20}, f
        )
    return out_dir
