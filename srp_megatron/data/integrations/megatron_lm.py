"""Megatron-LM integration: ``--srp-*`` flags and a ``train_valid_test_datasets_provider`` for ``pretrain()``.

The provider follows Megatron-LM's ``pretrain_gpt.py`` (same data flags: ``--data-path``,
``--split``, ``--data-cache-path``, ``--eod-mask-loss`` ...) and builds ``ReflectionGPTDataset``
instead of ``GPTDataset``; ``pretrain_gpt.py``'s own ``forward_step`` trains on it unchanged, since
the policy lives in ``loss_mask``. ``megatron.training`` is imported only when the provider runs
(megatron-core 0.16.1 does not ship it). Launch recipes: ``docs/dataset.md``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from srp_megatron.data import compat
from srp_megatron.data.builder import BuildRanks, build_datasets
from srp_megatron.data.dataset import ReflectionGPTDatasetConfig
from srp_megatron.data.loss_policy import DEFAULT_POLICY, PRESET_KEY, LossPolicy
from srp_megatron.errors import SRPError

#: Megatron-LM argument -> GPTDatasetConfig field, as pretrain_gpt.py's core_gpt_dataset_config_from_args
#: maps them. Fields the installed megatron-core lacks, and arguments an older Megatron-LM lacks, are skipped.
_ARG_TO_FIELD = {
    "seed": "random_seed",
    "seq_length": "sequence_length",
    "split": "split",
    "multiple_validation_sets": "multiple_validation_sets",
    "full_validation": "full_validation",
    "num_dataset_builder_threads": "num_dataset_builder_threads",
    "data_cache_path": "path_to_cache",
    "mmap_bin_files": "mmap_bin_files",
    "reset_position_ids": "reset_position_ids",
    "reset_attention_mask": "reset_attention_mask",
    "eod_mask_loss": "eod_mask_loss",
    "create_attention_mask_in_dataloader": "create_attention_mask",
    "object_storage_cache_path": "object_storage_cache_path",
    "mid_level_dataset_surplus": "mid_level_dataset_surplus",
    "allow_ambiguous_pad_tokens": "allow_ambiguous_pad_tokens",
    "dataloader_fast_cache_load": "fast_cache_load",
    "dataloader_defer_npy_index_mmap": "defer_npy_index_mmap",
    "context_parallel_size": "context_parallel_size",
    "data_parallel_size": "data_parallel_size",
    "hybrid_context_parallel": "hybrid_context_parallel",
    "dataloader_inter_document_masking": "inter_document_masking",
}
#: pretrain_gpt.py modes that build other dataset classes.
_UNSUPPORTED = {"mock_data": "--mock-data", "sft": "--sft", "fim_data": "--fim-data"}


def extra_args_provider(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``--srp-*`` flags (pass as ``pretrain(..., extra_args_provider=extra_args_provider)``)."""
    group = parser.add_argument_group(title="SRP (safety reflection pretraining)")
    group.add_argument(
        "--srp-loss-policy", default=DEFAULT_POLICY,
        help="Loss policy preset in srp-megatron's conf/loss_policy (paper, reflection_context, no_unsafe_text, "
        "context_only) or a YAML file of span type -> train|mask (default: %(default)s).",
    )
    group.add_argument(
        "--srp-loss-override", action="append", default=[], metavar="SPAN=ACTION",
        help="Override one span type of the policy, e.g. unsafe_text=mask (repeatable).",
    )
    group.add_argument(
        "--srp-return-span-types", action="store_true",
        help="Also return span_types per sample (for custom forward steps; the stock one ignores it).",
    )
    group.add_argument(
        "--srp-no-check-tokenizer", dest="srp_check_tokenizer", action="store_false",
        help="Do not compare each prefix's PREFIX.json tokenizer with the training tokenizer.",
    )
    return parser


def loss_policy_from_args(args: Any) -> LossPolicy:
    """The policy named by ``--srp-loss-policy`` with the ``--srp-loss-override`` items applied."""
    overrides = {}
    for item in args.srp_loss_override:
        span, sep, action = item.partition("=")
        if not sep:
            raise SRPError(f"--srp-loss-override '{item}' is not SPAN=ACTION (e.g. unsafe_text=mask)")
        overrides[span.strip()] = action.strip()
    return LossPolicy.from_mapping({PRESET_KEY: args.srp_loss_policy, **overrides}, source="--srp-loss-override")


def dataset_config_from_args(
    args: Any, tokenizer: Any, blend: Any, blend_per_split: Any
) -> ReflectionGPTDatasetConfig:
    """``ReflectionGPTDatasetConfig`` from Megatron-LM's parsed arguments (incl. the ``--srp-*`` flags)."""
    unsupported = [flag for attr, flag in _UNSUPPORTED.items() if getattr(args, attr, False)]
    if unsupported:
        raise SRPError(f"{', '.join(unsupported)}: not supported with SRP datasets; use pretrain_gpt.py's provider")
    if not hasattr(args, "srp_loss_policy"):
        raise SRPError("the --srp-* flags are missing: pass extra_args_provider=srp_megatron.data.extra_args_provider")
    fields = compat.gpt_config_fields()
    kwargs = {f: getattr(args, arg) for arg, f in _ARG_TO_FIELD.items() if f in fields and hasattr(args, arg)}
    if "sequence_parallel_size" in fields:
        kwargs["sequence_parallel_size"] = args.tensor_model_parallel_size * args.sequence_parallel
    if getattr(args, "per_dataset_sequences_path", None):
        with open(args.per_dataset_sequences_path, encoding="utf-8") as f:
            kwargs["sequences_per_dataset"] = json.load(f)
    return ReflectionGPTDatasetConfig(
        **kwargs,
        blend=blend,
        blend_per_split=blend_per_split,
        tokenizer=tokenizer,
        loss_policy=loss_policy_from_args(args),
        return_span_types=args.srp_return_span_types,
        check_tokenizer=args.srp_check_tokenizer,
    )


def train_valid_test_datasets_provider(train_val_test_num_samples: list[int], vp_stage: int | None = None):
    """Build the train, valid and test ``ReflectionGPTDataset`` splits for Megatron-LM's ``pretrain()``.

    Built where ``pretrain_gpt.py`` builds: tensor-parallel rank 0 of the stages that read tokens or labels
    (and of middle stages when multi-token-prediction layers may sit there and need labels).
    """
    # megatron.training is Megatron-LM's, not megatron-core's: imported only when Megatron-LM runs the provider.
    from megatron.training import get_args, get_tokenizer, print_rank_0
    from megatron.training.utils import get_blend_and_blend_per_split

    args = get_args()
    blend, blend_per_split = get_blend_and_blend_per_split(args)
    config = dataset_config_from_args(args, get_tokenizer(), blend, blend_per_split)
    print_rank_0(f"> building SRP train, validation, and test datasets (loss policy {config.loss_policy}) ...")
    mtp = bool(getattr(args, "mtp_num_layers", None))
    train_ds, valid_ds, test_ds = build_datasets(config, train_val_test_num_samples, BuildRanks.data_stages,
                                                 vp_stage=vp_stage, middle_stages=mtp)
    print_rank_0("> finished creating SRP datasets ...")
    return train_ds, valid_ds, test_ds


# Every rank calls the provider and megatron's builder coordinates them, as pretrain_gpt.py declares.
train_valid_test_datasets_provider.is_distributed = True
