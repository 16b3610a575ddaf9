"""Refuse impossible layouts before any GPU time is spent.

``validate_layout`` checks the model, precision and parallel sections together with the batch sizes,
the world size and the target GPU, and raises one :class:`SRPError` listing every problem, each naming
the key and the fix. The target is a GPU name from ``srp_megatron.train.gpus`` (``srp plan``),
``"cpu"``, or None for "this machine" (``srp pretrain``: CUDA capability and Transformer Engine are
probed at run time).
"""

from __future__ import annotations

from dataclasses import dataclass

from srp_megatron.errors import SRPError
from srp_megatron.train.model import ModelConfig, te_available
from srp_megatron.train.parallel import CPCommType, ParallelConfig
from srp_megatron.train.precision import DType, FP8Recipe, PrecisionConfig


@dataclass(frozen=True)
class Target:
    """Where the job will run."""

    name: str
    """GPU name, ``cpu``, or ``this machine``."""
    compute_capability: tuple[int, int] | None
    """CUDA compute capability; None on CPU."""
    has_te: bool
    """Transformer Engine usable (assumed for named GPUs, probed for this machine)."""

    @property
    def is_cpu(self) -> bool:
        """True for CPU runs."""
        return self.compute_capability is None


def resolve_target(gpu: str | None) -> Target:
    """The run target: a named GPU, ``cpu``, or (None) this machine's first CUDA device."""
    if gpu == "cpu":
        return Target("cpu", None, False)
    if gpu is not None:
        from srp_megatron.train.gpus import get_gpu

        spec = get_gpu(gpu)
        return Target(spec.name, spec.compute_capability, True)
    from srp_megatron.train.gpus import runtime_compute_capability

    cc = runtime_compute_capability()
    return Target("this machine", cc, cc is not None and te_available())


def _check_model_split(model: ModelConfig, precision: PrecisionConfig, parallel: ParallelConfig,
                       recompute: str, recompute_num_layers: int | None, problems: list[str]) -> None:
    tp, pp, vpp = parallel.tp, parallel.pp, parallel.vpp
    if model.num_attention_heads % tp:
        problems.append(f"parallel.tensor_model_parallel_size={tp} does not divide model.num_attention_heads="
                        f"{model.num_attention_heads}: choose a TP that divides the heads")
    if model.query_groups % tp:
        problems.append(f"parallel.tensor_model_parallel_size={tp} does not divide the query groups "
                        f"(model.num_query_groups={model.query_groups}): choose a TP that divides them")
    cp = parallel.cp
    if cp > 1 and parallel.cp_comm_type == CPCommType.a2a and (model.num_attention_heads // tp % cp
                                                                or model.query_groups // tp % cp):
        problems.append(f"parallel.cp_comm_type=a2a splits the heads over CP: the query heads "
                        f"({model.num_attention_heads}) and query groups ({model.query_groups}) per TP rank must "
                        f"be divisible by context_parallel_size={cp}; use cp_comm_type=p2p")
    if model.num_layers % (pp * vpp):
        problems.append(f"model.num_layers={model.num_layers} is not divisible by pipeline_model_parallel_size x "
                        f"virtual_pipeline_model_parallel_size = {pp} x {vpp}: choose PP (x VPP) dividing the layers")
        return
    per_stage, per_chunk = model.num_layers // pp, model.num_layers // (pp * vpp)
    if precision.first_last_layers_bf16 and (precision.uses_fp8 or precision.uses_fp4):
        for key in ("num_layers_at_start_in_bf16", "num_layers_at_end_in_bf16"):
            if getattr(precision, key) > per_stage:
                problems.append(f"precision.{key}={getattr(precision, key)} exceeds the {per_stage} layers of a "
                                "pipeline stage: lower it or the pipeline size")
    if str(getattr(recompute, "value", recompute)) == "full" and recompute_num_layers is not None:
        if not 1 <= recompute_num_layers <= per_chunk:
            problems.append(f"training.recompute_num_layers={recompute_num_layers}: must be in [1, {per_chunk}] "
                            "(layers per virtual pipeline stage), or null to recompute every layer")


def _check_batch(parallel: ParallelConfig, world_size: int | None, seq_length: int, micro_batch_size: int,
                 global_batch_size: int, problems: list[str]) -> None:
    tp, cp = parallel.tp, parallel.cp
    if min(seq_length, micro_batch_size, global_batch_size) < 1:
        problems.append(f"training.seq_length={seq_length}, micro_batch_size={micro_batch_size}, "
                        f"global_batch_size={global_batch_size}: all must be >= 1")
        return
    dp = 1
    if world_size is not None:
        if world_size % parallel.model_parallel_size:
            problems.append(f"world size {world_size} is not divisible by TP x PP x CP = {tp} x {parallel.pp} x "
                            f"{cp} = {parallel.model_parallel_size}: change the GPU count or the parallel sizes")
            return
        dp = parallel.data_parallel_size(world_size)
    num_microbatches = global_batch_size // (micro_batch_size * dp)
    if global_batch_size % (micro_batch_size * dp):
        problems.append(f"training.global_batch_size={global_batch_size} is not divisible by micro_batch_size x DP "
                        f"= {micro_batch_size} x {dp}: make it a multiple of {micro_batch_size * dp}")
    elif parallel.virtual_pipeline_model_parallel_size and num_microbatches % parallel.pp:
        problems.append(f"the interleaved pipeline needs the number of microbatches ({num_microbatches}) divisible by "
                        f"pipeline_model_parallel_size={parallel.pp}: raise training.global_batch_size")
    if parallel.sequence_parallel and tp == 1:
        problems.append("parallel.sequence_parallel=true needs tensor_model_parallel_size > 1: set it false")
    if parallel.tp_comm_overlap and not parallel.sequence_parallel:
        problems.append("parallel.tp_comm_overlap=true needs parallel.sequence_parallel=true")
    if cp > 1 and seq_length % (2 * cp):
        problems.append(f"training.seq_length={seq_length} is not divisible by 2 x context_parallel_size = {2 * cp} "
                        "(load-balanced causal CP splits the sequence in 2 x CP chunks): change either")
    elif parallel.sequence_parallel and (seq_length // cp) % tp:
        problems.append(f"training.seq_length / CP = {seq_length // cp} is not divisible by "
                        f"tensor_model_parallel_size={tp} (sequence parallelism splits it): change either")


def _check_target(precision: PrecisionConfig, parallel: ParallelConfig, target: Target, problems: list[str]) -> None:
    low = precision.uses_fp8 or precision.uses_fp4
    if not target.has_te:  # megatron-core's local spec: torch norms and its own attention
        where = "on CPU" if target.is_cpu else "without Transformer Engine"
        if parallel.cp > 1:
            problems.append(f"parallel.context_parallel_size={parallel.cp}: context parallelism needs "
                            f"Transformer Engine attention on GPU; use 1 {where}")
        if parallel.sequence_parallel and not target.is_cpu:  # CPU runs swap in norms that support it
            problems.append("parallel.sequence_parallel=true needs Transformer Engine's layer spec (the local spec's "
                            f"torch norms have no sequence parallelism); set it false {where}")
    if target.is_cpu:
        if precision.dtype == DType.fp16:
            problems.append("precision.dtype=fp16 on CPU: use precision=fp32-cpu (or dtype=bf16)")
        if low:
            problems.append("precision.fp8/fp4 needs Transformer Engine on a CUDA GPU: use precision=fp32-cpu on CPU")
        if parallel.tp_comm_overlap:
            problems.append("parallel.tp_comm_overlap=true needs GPUs with Transformer Engine: set it false on CPU")
        return
    cc = target.compute_capability
    if low and not target.has_te:
        problems.append("precision.fp8/fp4 needs Transformer Engine, which is not importable here: "
                        "install transformer-engine[pytorch] (NGC images ship it) or use precision=bf16")
    if precision.uses_fp8 and cc < (8, 9):
        problems.append(f"precision.fp8={precision.fp8.value}: {target.name} (compute capability {cc[0]}.{cc[1]}) "
                        "has no FP8 tensor cores (needs Ada, Hopper or Blackwell): use precision=bf16")
    elif precision.needs_blackwell and cc < (10, 0):
        what = "fp4=nvfp4" if precision.uses_fp4 else "fp8_recipe=mxfp8"
        problems.append(f"precision.{what} needs Blackwell (compute capability >= 10.0) but {target.name} is "
                        f"{cc[0]}.{cc[1]}: use precision=fp8-h100-tensorwise (or fp8-blockwise) on Hopper")


def _check_fp8_alignment(model: ModelConfig, precision: PrecisionConfig, parallel: ParallelConfig,
                         seq_length: int, micro_batch_size: int, problems: list[str]) -> None:
    if not (precision.uses_fp8 or precision.uses_fp4):
        return
    # TE's FP8 GEMMs need the inner dimension a multiple of 16 (32 for MXFP8's 32-element blocks) and
    # the token count a multiple of 8 (32 for MXFP8).
    mx = precision.uses_fp8 and precision.fp8_recipe == FP8Recipe.mxfp8
    dim_align, token_align = (32, 32) if mx else (16, 8)
    tp, d = parallel.tp, model.head_dim
    fc1 = model.ffn_hidden_size * (2 if model.activation.gated else 1)
    dims = {
        "model.hidden_size": model.hidden_size,
        "model.ffn_hidden_size / TP": model.ffn_hidden_size / tp,
        "fc1 output (gated: 2 x ffn_hidden_size) / TP": fc1 / tp,
        "query width (heads x head dim) / TP": model.num_attention_heads * d / tp,
        "QKV output width / TP": (model.num_attention_heads + 2 * model.query_groups) * d / tp,
    }
    for name, value in dims.items():
        if value % dim_align:
            problems.append(f"FP8 needs {name} = {value:g} divisible by {dim_align}: change the model shape or TP, "
                            "or use precision=bf16")
    tokens = micro_batch_size * seq_length // parallel.cp // (tp if parallel.sequence_parallel else 1)
    if tokens % token_align:
        problems.append(f"FP8 needs the tokens per GPU (micro_batch_size x seq_length / CP / SP) = {tokens} "
                        f"divisible by {token_align}: change training.seq_length or micro_batch_size")


def validate_layout(model: ModelConfig, precision: PrecisionConfig, parallel: ParallelConfig, *,
                    world_size: int | None, gpu: str | None, seq_length: int, micro_batch_size: int,
                    global_batch_size: int, recompute: str = "none",
                    recompute_num_layers: int | None = None) -> None:
    """Raise :class:`SRPError` listing every reason this layout cannot run; return None when it can.

    ``world_size`` None skips the checks that need it; ``gpu`` is a GPU name, ``cpu`` or None (this
    machine). The output layer is not an FP8 GEMM in megatron-core, so the vocabulary needs no FP8 alignment.
    """
    problems: list[str] = []
    target = resolve_target(gpu)
    _check_model_split(model, precision, parallel, recompute, recompute_num_layers, problems)
    _check_batch(parallel, world_size, seq_length, micro_batch_size, global_batch_size, problems)
    _check_target(precision, parallel, target, problems)
    _check_fp8_alignment(model, precision, parallel, seq_length, micro_batch_size, problems)
    if precision.fp8_param and not parallel.use_distributed_optimizer:
        problems.append("precision.fp8_param=true needs parallel.use_distributed_optimizer=true "
                        "(FP8 weights are gathered by the distributed optimizer)")
    if problems:
        head = f"invalid training layout for {target.name}"
        raise SRPError(head + ": " + problems[0] if len(problems) == 1 else head + ":\n  - " + "\n  - ".join(problems))
