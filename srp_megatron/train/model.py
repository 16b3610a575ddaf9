"""Model architecture presets and megatron-core ``GPTModel`` construction.

``ModelConfig`` holds the architecture only (shape, norms, activation, RoPE, embeddings); presets live
in ``conf/model/<name>.yaml`` (``smollm2-1.7b``, ``qwen3-1.7b``, ``llama3-8b``, ``llama3-70b``, ``tiny``,
``tiny-gqa``). Building uses Transformer Engine's layer spec on GPU when TE is importable (required
for FP8) and megatron-core's local spec otherwise (CPU). ``analytic_parameter_count`` is the closed
formula, written without megatron, that the tests hold the real model to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
import logging
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.activations import squared_relu
from megatron.core.models.gpt import GPTModel, gpt_layer_specs
from megatron.core.models.gpt import gpt_layer_specs as specs
from megatron.core.tensor_parallel import layers
from megatron.core.transformer import TransformerConfig
from omegaconf import MISSING

from srp_megatron.config.loader import load_preset, preset_names
from srp_megatron.errors import SRPError
from srp_megatron.train.cpu import (
    apply_cpu_accommodations,
    cuda_absent,
    deallocate_pipeline_outputs,
    initialize_cpu_rng_tracker,
    sequence_parallel_block_spec,
)
from srp_megatron.train.parallel import ParallelConfig
from srp_megatron.train.precision import DType, PrecisionConfig

logger = logging.getLogger(__name__)


class Normalization(enum.StrEnum):
    """Norm layer type (megatron ``TransformerConfig.normalization``)."""

    RMSNorm = "RMSNorm"
    LayerNorm = "LayerNorm"


class Activation(enum.StrEnum):
    """MLP activation; the ``*glu`` ones are gated (fc1 is twice as wide)."""

    swiglu = "swiglu"
    geglu = "geglu"
    gelu = "gelu"
    squared_relu = "squared_relu"

    @property
    def gated(self) -> bool:
        """True for gated linear units."""
        return self in (Activation.swiglu, Activation.geglu)


class PositionEmbedding(enum.StrEnum):
    """Position encoding (megatron ``GPTModel.position_embedding_type``)."""

    rope = "rope"
    none = "none"


@dataclass
class ModelConfig:
    """Decoder-only transformer architecture (no parallelism, precision or training knobs)."""

    preset: str = ""
    """Name of the ``conf/model`` preset these values came from (informational; set by the loader)."""
    num_layers: int = MISSING
    """Transformer layers."""
    hidden_size: int = MISSING
    """Model width h."""
    ffn_hidden_size: int = MISSING
    """MLP inner width (per branch for gated activations)."""
    num_attention_heads: int = MISSING
    """Query heads."""
    num_query_groups: int | None = None
    """Key/value heads (GQA); None means one per query head (MHA)."""
    kv_channels: int | None = None
    """Head dimension; None means ``hidden_size / num_attention_heads``."""
    normalization: Normalization = Normalization.RMSNorm
    """``RMSNorm`` or ``LayerNorm`` (pre-norm)."""
    norm_epsilon: float = 1.0e-5
    """Epsilon of every norm."""
    activation: Activation = Activation.swiglu
    """MLP activation: ``swiglu``, ``geglu``, ``gelu`` or ``squared_relu``."""
    qk_layernorm: bool = False
    """Normalise queries and keys per head before attention (Qwen3)."""
    position_embedding: PositionEmbedding = PositionEmbedding.rope
    """``rope`` or ``none``."""
    rotary_base: int = 10000
    """RoPE base (theta)."""
    rotary_percent: float = 1.0
    """Fraction of each head's dimensions that RoPE rotates."""
    rope_scaling: bool = False
    """Llama 3.1 style RoPE frequency scaling."""
    rope_scaling_factor: float = 8.0
    """Scale factor of ``rope_scaling``."""
    tie_embeddings: bool = False
    """Share the input embedding and the output layer weights."""
    vocab_size: int | None = None
    """Tokenizer vocabulary; None means take it from the tokenizer (padded for TP at build time)."""
    make_vocab_size_divisible_by: int = 128
    """Pad the vocabulary to a multiple of this times TP, like Megatron-LM."""
    add_bias_linear: bool = False
    """Biases in every linear layer."""
    add_qkv_bias: bool = False
    """Bias in the QKV projection only (Qwen2 style)."""
    init_method_std: float = 0.02
    """Standard deviation of the normal weight initialisation."""
    hidden_dropout: float = 0.0
    """Dropout after attention and MLP (CPU runs need 0)."""
    attention_dropout: float = 0.0
    """Dropout on attention probabilities (CPU runs need 0)."""

    def __post_init__(self):
        for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name}={getattr(self, name)}: must be >= 1")
        heads, groups = self.num_attention_heads, self.query_groups
        if groups < 1 or heads % groups:
            raise ValueError(
                f"model.num_query_groups={self.num_query_groups}: must divide num_attention_heads={heads}"
            )
        if self.kv_channels is None and self.hidden_size % heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} is not divisible by num_attention_heads={heads}: "
                "set model.kv_channels (the head dimension) explicitly"
            )
        if self.kv_channels is not None and self.kv_channels < 1:
            raise ValueError(f"model.kv_channels={self.kv_channels}: must be >= 1 or null")
        if not 0 < self.rotary_percent <= 1:
            raise ValueError(f"model.rotary_percent={self.rotary_percent}: must be in (0, 1]")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ValueError(f"model.vocab_size={self.vocab_size}: must be >= 1 or null (from the tokenizer)")
        if self.make_vocab_size_divisible_by < 1:
            raise ValueError(f"model.make_vocab_size_divisible_by={self.make_vocab_size_divisible_by}: must be >= 1")
        if not (self.norm_epsilon > 0 and self.init_method_std > 0):
            raise ValueError(
                f"model.norm_epsilon={self.norm_epsilon}, model.init_method_std={self.init_method_std}: must be > 0"
            )
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"model.{name}={getattr(self, name)}: must be in [0, 1)")

    @property
    def query_groups(self) -> int:
        """Key/value heads (equal to the query heads without GQA)."""
        return self.num_query_groups or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        """Dimension of one attention head."""
        return self.kv_channels or self.hidden_size // self.num_attention_heads


def model_preset_names() -> list[str]:
    """Names of the packaged model presets."""
    return preset_names("model")


def load_model_preset(name: str) -> dict[str, Any]:
    """The values of ``conf/model/<name>.yaml`` (or of a YAML path) as a plain dict, ``preset`` set."""
    return load_preset(name, "model")


def padded_vocab_size(model: ModelConfig, tp: int, vocab_size: int | None = None) -> int:
    """Vocabulary padded to a multiple of ``make_vocab_size_divisible_by * tp`` (Megatron-LM's rule).

    ``vocab_size`` (the tokenizer's) wins over ``model.vocab_size``; padding twice changes nothing.
    """
    vocab = vocab_size if vocab_size is not None else model.vocab_size
    if vocab is None:
        raise SRPError("model.vocab_size is null and no tokenizer vocabulary was given: set model.vocab_size")
    multiple = model.make_vocab_size_divisible_by * tp
    return -(-vocab // multiple) * multiple


def analytic_parameter_count(model: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameters of the whole model from the closed formula (no megatron); tied embeddings counted once.

    Keys: ``embedding``, ``attention``, ``qk_norm``, ``mlp``, ``layer_norms``, ``per_layer`` (one layer),
    ``layers`` (all), ``final_norm``, ``output_layer``, ``total``, ``linear_per_layer`` (GEMM weights of
    one layer, what FP8 stores in 8 bits) and ``non_embedding``.
    """
    h, f, d = model.hidden_size, model.ffn_hidden_size, model.head_dim
    q, kv = model.num_attention_heads * d, model.query_groups * d
    norm = h * (2 if model.normalization == Normalization.LayerNorm else 1)  # LayerNorm has a bias
    fc1 = f * (2 if model.activation.gated else 1)
    linear = h * (q + 2 * kv) + q * h + h * fc1 + f * h
    attention = h * (q + 2 * kv) + q * h
    if model.add_bias_linear or model.add_qkv_bias:
        attention += q + 2 * kv
    attention += h if model.add_bias_linear else 0
    qk_norm = 2 * d * (norm // h) if model.qk_layernorm else 0
    mlp = h * fc1 + f * h + (fc1 + h if model.add_bias_linear else 0)
    per_layer = attention + qk_norm + mlp + 2 * norm
    counts = {
        "embedding": vocab_size * h,
        "attention": attention,
        "qk_norm": qk_norm,
        "mlp": mlp,
        "layer_norms": 2 * norm,
        "per_layer": per_layer,
        "linear_per_layer": linear,
        "layers": model.num_layers * per_layer,
        "final_norm": norm,
        "output_layer": 0 if model.tie_embeddings else vocab_size * h,
    }
    counts["total"] = counts["embedding"] + counts["layers"] + norm + counts["output_layer"]
    counts["non_embedding"] = counts["total"] - counts["embedding"]
    return counts


def te_available() -> bool:
    """True when CUDA is present and megatron-core can use Transformer Engine."""
    if not torch.cuda.is_available():
        return False

    return bool(getattr(gpt_layer_specs, "HAVE_TE", False))


def grad_accum_fusion_available(use_te: bool) -> bool:
    """Fuse weight-gradient accumulation into ``main_grad`` (Megatron-LM's default) only with TE and Apex:
    TE layers do it natively, megatron's output layer then needs Apex's ``fused_weight_gradient_mlp_cuda``."""
    if not use_te:
        return False

    return bool(getattr(layers, "_grad_accum_fusion_available", False))


def _activation_kwargs(model: ModelConfig) -> dict[str, Any]:
    func = {Activation.swiglu: F.silu, Activation.geglu: F.gelu, Activation.gelu: F.gelu}.get(model.activation)
    return {"gated_linear_unit": model.activation.gated, "activation_func": func or squared_relu}


def _recompute_kwargs(recompute: str, recompute_num_layers: int | None) -> dict[str, Any]:
    recompute = str(getattr(recompute, "value", recompute))
    if recompute == "none":
        return {}
    if recompute == "selective":
        return {"recompute_granularity": "selective"}
    if recompute == "full":
        # None: every layer recomputed (uniform chunks of one layer); N: the first N layers of each
        # (virtual) pipeline stage recomputed, the rest keep their activations (megatron's "block").
        if recompute_num_layers is None:
            return {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1}
        return {"recompute_granularity": "full", "recompute_method": "block",
                "recompute_num_layers": recompute_num_layers}
    raise SRPError(f"training.recompute={recompute!r}: expected none, selective or full")


def _supported_fields(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop unset fields this megatron-core lacks; refuse set ones (version guard, 0.16 to 0.19)."""
    known = {f.name for f in dataclasses.fields(TransformerConfig)}
    for key in [k for k in kwargs if k not in known]:
        if kwargs[key] not in (None, False):
            from megatron.core import __version__

            raise SRPError(f"megatron-core {__version__} has no TransformerConfig.{key}={kwargs[key]!r}: upgrade it")
        del kwargs[key]
    return kwargs


def build_transformer_config(model, precision, parallel, *, recompute: str = "none",
                             recompute_num_layers: int | None = None, params_dtype: Any = None,
                             use_te: bool | None = None, use_cpu_initialization: bool | None = None,
                             perform_initialization: bool = True, **overrides: Any):
    """megatron-core ``TransformerConfig`` from the model, precision and parallel sections.

    ``params_dtype`` defaults to the precision's dtype; ``use_te`` (default: TE usable) turns on the
    fused kernels; ``overrides`` are extra ``TransformerConfig`` fields set by the driver.
    """
    use_te = te_available() if use_te is None else use_te
    dtype = params_dtype if params_dtype is not None else precision.torch_dtype()
    # megatron fuses bias + GLU/GELU only for gated units or GELU with a bias
    act = model.activation
    fused = use_te and act != Activation.squared_relu and (act.gated or model.add_bias_linear)
    kwargs: dict[str, Any] = dict(
        num_layers=model.num_layers, hidden_size=model.hidden_size, ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads, num_query_groups=model.query_groups,
        kv_channels=model.head_dim, normalization=model.normalization.value, layernorm_epsilon=model.norm_epsilon,
        add_bias_linear=model.add_bias_linear, add_qkv_bias=model.add_qkv_bias, qk_layernorm=model.qk_layernorm,
        init_method_std=model.init_method_std, hidden_dropout=model.hidden_dropout,
        attention_dropout=model.attention_dropout, params_dtype=dtype, pipeline_dtype=dtype,
        use_cpu_initialization=(not torch.cuda.is_available()) if use_cpu_initialization is None
        else use_cpu_initialization,
        perform_initialization=perform_initialization,
        bias_activation_fusion=fused, bias_dropout_fusion=use_te, apply_rope_fusion=use_te,
        gradient_accumulation_fusion=grad_accum_fusion_available(use_te),
        # as Megatron-LM: free stage outputs once sent (PP memory); not on CPU (see train/cpu.py)
        deallocate_pipeline_outputs=deallocate_pipeline_outputs(),
        **_activation_kwargs(model), **precision.transformer_config_kwargs(),
        **parallel.transformer_config_kwargs(), **_recompute_kwargs(recompute, recompute_num_layers),
    )
    kwargs.update(overrides)
    return TransformerConfig(**_supported_fields(kwargs))


def layer_spec(model: ModelConfig, precision, use_te: bool, config: Any = None, vp_stage: int | None = None):
    """Transformer Engine layer spec when ``use_te`` (needed for FP8/FP4), else megatron-core's local spec
    (on CPU with sequence parallelism, as a block spec with norms that support it: ``train/cpu.py``)."""
    if use_te:
        return specs.get_gpt_layer_with_transformer_engine_spec(qk_layernorm=model.qk_layernorm)
    if precision.uses_fp8 or precision.uses_fp4:
        raise SRPError("precision.fp8/fp4 needs Transformer Engine on a CUDA GPU: use precision=bf16 here")
    spec = specs.get_gpt_layer_local_spec(qk_layernorm=model.qk_layernorm, normalization=model.normalization.value)
    if config is not None and config.sequence_parallel:
        if not cuda_absent():  # validate_layout refuses this first, naming the key
            raise SRPError("parallel.sequence_parallel=true needs Transformer Engine's layer spec on GPU")
        return sequence_parallel_block_spec(spec, config, vp_stage)
    return spec


def build_gpt_model(model: ModelConfig, precision, parallel, *, vocab_size: int, max_sequence_length: int,
                    pre_process: bool = True, post_process: bool = True, vp_stage: int | None = None,
                    config: Any = None, use_te: bool | None = None, **config_kwargs: Any):
    """A megatron-core ``GPTModel`` (one pipeline stage / virtual chunk) for this architecture.

    ``vocab_size`` is the tokenizer's and is padded here for TP; ``config`` is a prebuilt
    ``TransformerConfig`` (else built from ``config_kwargs`` via :func:`build_transformer_config`). On CPU with
    PP > 1 and tied embeddings the last stage syncs its output weight through ``.cuda()``: build inside
    ``train.cpu.cuda_calls_on_cpu()`` (the ``Trainer`` holds it).
    """
    use_te = te_available() if use_te is None else use_te
    if config is None:
        config = build_transformer_config(model, precision, parallel, use_te=use_te, **config_kwargs)
    kwargs: dict[str, Any] = dict(
        config=config, transformer_layer_spec=layer_spec(model, precision, use_te, config, vp_stage),
        vocab_size=padded_vocab_size(model, parallel.tp, vocab_size), max_sequence_length=max_sequence_length,
        pre_process=pre_process, post_process=post_process,
        share_embeddings_and_output_weights=model.tie_embeddings,
        position_embedding_type=model.position_embedding.value, rotary_percent=model.rotary_percent,
        rotary_base=model.rotary_base, rope_scaling=model.rope_scaling, rope_scaling_factor=model.rope_scaling_factor,
    )
    if vp_stage is not None:
        if "vp_stage" not in inspect.signature(GPTModel.__init__).parameters:
            raise SRPError("this megatron-core's GPTModel has no vp_stage: upgrade to >= 0.14 for interleaving")
        kwargs["vp_stage"] = vp_stage
    return GPTModel(**kwargs)


def count_parameters(module) -> int:
    """Unique parameters of a module (a tied embedding counts once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def count_parameters_meta(model: ModelConfig, vocab_size: int, *, num_layers: int | None = None,
                          max_sequence_length: int = 4096) -> int:
    """Parameters of the real ``GPTModel`` (TP=1, PP=1, local spec) built on the meta device: no memory used.

    ``num_layers`` builds a shorter model of the same shape (to keep huge presets fast in tests).
    """
    shape = dataclasses.replace(model, num_layers=num_layers or model.num_layers)
    with _world_of_one(), torch.device("meta"):
        gpt = build_gpt_model(
            shape, PrecisionConfig(dtype=DType.bf16), ParallelConfig(), vocab_size=vocab_size,
            max_sequence_length=max_sequence_length, use_te=False, use_cpu_initialization=True,
            perform_initialization=False,
        )
        return count_parameters(gpt)


@contextlib.contextmanager
def _world_of_one():
    """A world-size-1 gloo group and megatron parallel state, created only if absent and torn down after."""
    apply_cpu_accommodations()
    made_group = not dist.is_initialized()
    made_state = not parallel_state.model_parallel_is_initialized()
    with tempfile.TemporaryDirectory(prefix="srp-pg-") as tmp:
        if made_group:
            dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=0, world_size=1)
        try:
            if made_state:
                parallel_state.initialize_model_parallel()
                if not torch.cuda.is_available():
                    initialize_cpu_rng_tracker()
            yield
        finally:
            if made_state:
                parallel_state.destroy_model_parallel()
            if made_group:
                dist.destroy_process_group()
