"""Plan a pretraining run before renting GPUs: parameters, memory per GPU, tokens/s, and a verdict.

    srp plan CONFIG --gpus 64 --gpu h100-80gb [--mfu 0.4] [--json] [key=value ...]

Memory is estimated per GPU for the first and the last pipeline stage (the fullest ones):
- weights, gradients and optimizer state from megatron's bytes per parameter (the distributed optimizer
  shards the FP32 master weights and Adam moments over DP x CP; FP8 weights take 1 byte);
- activations per transformer layer after Korthikanti et al. 2022 ("Reducing Activation Recomputation
  in Large Transformer Models"), generalised to GQA, gated MLPs, flash attention and FP8 GEMM inputs,
  times the layers in flight under megatron's 1F1B / interleaved schedules; with and without recompute;
- the logits and FP32 softmax of the last stage, and a fixed runtime overhead (CUDA context, NCCL, workspaces).
Throughput is ``MFU x peak / FLOPs per token`` with Megatron-LM's FLOPs count (GEMMs x 3 passes, causal
attention, logits). These are estimates for choosing a layout, not guarantees.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from srp_megatron.errors import SRPError
from srp_megatron.train.config import Recompute, load_pretrain_config
from srp_megatron.train.data import rendered_vocab_size
from srp_megatron.train.gpus import GIB, get_gpu
from srp_megatron.train.model import ModelConfig, analytic_parameter_count, padded_vocab_size
from srp_megatron.train.parallel import ParallelConfig
from srp_megatron.train.precision import DType, PrecisionConfig
from srp_megatron.train.validation import validate_layout


@dataclass
class StageMemory:
    """Bytes on one GPU of a pipeline stage."""

    stage: str
    parameters: int
    weights: int
    gradients: int
    optimizer: int
    fp8_weight_cache: int
    activations: int
    logits: int
    overhead: int

    @property
    def total(self) -> int:
        """Sum of every term."""
        return (self.weights + self.gradients + self.optimizer + self.fp8_weight_cache + self.activations
                + self.logits + self.overhead)


@dataclass
class PlanReport:
    """What ``srp plan`` prints."""

    gpu: str
    gpus: int
    layout: dict
    parameters: int
    padded_vocab: int
    recompute: Recompute
    stages: list[StageMemory]
    activations_by_recompute: dict[str, int]
    """Activation bytes of the fullest stage under each recompute setting."""
    capacity: int
    headroom: float
    verdict: str
    """``fits``, ``tight`` (over the headroom, under the capacity) or ``does not fit``."""
    reasons: list[str] = field(default_factory=list)
    flops_per_token: float = 0.0
    peak_tflops: float = 0.0
    mfu: float = 0.0
    tokens_per_s: float = 0.0
    step_time_s: float = 0.0

    @property
    def peak(self) -> StageMemory:
        """The fullest stage."""
        return max(self.stages, key=lambda s: s.total)

    def to_dict(self) -> dict:
        """JSON-ready dict, with each stage's total."""
        out = dataclasses.asdict(self)
        for stage, d in zip(self.stages, out["stages"], strict=True):
            d["total"] = stage.total
        return out


def bytes_per_parameter(precision: PrecisionConfig) -> tuple[int, int, int]:
    """``(weights, gradients, optimizer state)`` bytes per parameter, megatron's mixed-precision table.

    FP32: 4 + 4 + 8 (Adam moments). 16-bit with FP32 gradients: 2 + 4 + 12 (FP32 master + moments).
    16-bit gradients: 2 + 2 + 16 (the optimizer also keeps an FP32 gradient copy).
    """
    if precision.dtype == DType.fp32:
        return 4, 4, 8
    return (2, 4, 12) if precision.grad_reduce_in_fp32 else (2, 2, 16)


def layer_activation_bytes(model: ModelConfig, precision: PrecisionConfig, parallel: ParallelConfig, *,
                           seq_length: int, micro_batch_size: int, fp8_layer: bool = False,
                           flash_attention: bool = True, recompute_core_attention: bool = False) -> float:
    """Bytes one transformer layer keeps for backward for one microbatch on one GPU (no full recompute).

    Korthikanti et al.'s per-tensor accounting: tensors before the column-parallel GEMMs (norm inputs,
    QKV/fc1 inputs, dropout masks) are split over TP only with sequence parallelism; the rest is split
    over TP. FP8 layers keep their GEMM inputs in 1 byte (Transformer Engine saves the quantized copy).
    """
    e = 4 if precision.dtype == DType.fp32 else 2
    g = 1 if fp8_layer else e
    h, f, d = model.hidden_size, model.ffn_hidden_size, model.head_dim
    q, kv, heads = model.num_attention_heads * d, model.query_groups * d, model.num_attention_heads
    fc1 = f * (2 if model.activation.gated else 1)
    tokens = seq_length // parallel.cp * micro_batch_size
    masks = 2 * h if model.hidden_dropout > 0 else 0  # 1-byte dropout masks after attention and MLP
    sequence_region = 2 * e * h + 2 * g * h + masks
    tp_region = e * (q + kv) + e * kv + e * q + e * fc1 + g * f  # Q, K, V, attention out, fc1 out, fc2 in
    if model.qk_layernorm:
        tp_region += e * (q + kv)
    if fp8_layer:
        tp_region += g * q  # the projection's quantized input, beside the attention output
    per_token = sequence_region / (parallel.tp if parallel.sequence_parallel else 1) + tp_region / parallel.tp
    core = 0.0
    if not flash_attention and not recompute_core_attention:
        s = seq_length // parallel.cp
        dropout = model.attention_dropout > 0
        core = heads * s * s * micro_batch_size * (e + (1 + e if dropout else 0)) / parallel.tp
    return per_token * tokens + core


def chunks_in_flight(parallel: ParallelConfig, stage_rank: int, num_microbatches: int) -> int:
    """Model chunks x microbatches whose activations a pipeline rank holds at its peak (megatron warmup + 1)."""
    pp, vpp = parallel.pp, parallel.vpp
    if vpp == 1:
        return min(pp - stage_rank, num_microbatches)
    return min(2 * (pp - stage_rank - 1) + (vpp - 1) * pp + 1, num_microbatches * vpp)


@dataclass
class _Planner:
    """The inputs shared by every stage estimate."""

    model: ModelConfig
    precision: PrecisionConfig
    parallel: ParallelConfig
    seq_length: int
    micro_batch_size: int
    num_microbatches: int
    recompute_num_layers: int | None
    vocab: int
    shard: int
    counts: dict

    @property
    def act_bytes(self) -> int:
        """Bytes per activation element."""
        return 4 if self.precision.dtype == DType.fp32 else 2

    @property
    def tokens(self) -> int:
        """Tokens of one microbatch on one context-parallel rank."""
        return self.seq_length // self.parallel.cp * self.micro_batch_size

    def activations(self, rank: int, bf16_layers: int, recompute: Recompute) -> float:
        """Activation bytes a pipeline rank holds at its peak under ``recompute``."""
        p, model = self.parallel, self.model
        per_chunk = model.num_layers // (p.pp * p.vpp)
        stage_layers = per_chunk * p.vpp
        low = self.precision.uses_fp8 or self.precision.uses_fp4
        fp8_share = (stage_layers - bf16_layers) / stage_layers if low else 0.0
        kw = dict(seq_length=self.seq_length, micro_batch_size=self.micro_batch_size,
                  recompute_core_attention=recompute == Recompute.selective)
        layer = (fp8_share * layer_activation_bytes(model, self.precision, p, fp8_layer=True, **kw)
                 + (1 - fp8_share) * layer_activation_bytes(model, self.precision, p, **kw))
        chunks = chunks_in_flight(p, rank, self.num_microbatches)
        if recompute != Recompute.full:
            return chunks * per_chunk * layer
        layer_input = self.act_bytes * model.hidden_size * self.tokens / (p.tp if p.sequence_parallel else 1)
        n = per_chunk if self.recompute_num_layers is None else min(self.recompute_num_layers, per_chunk)
        # Recomputed layers keep only their input; one layer's activations are rebuilt at a time in backward.
        return chunks * (n * layer_input + (per_chunk - n) * layer) + layer

    def stage(self, rank: int, recompute: Recompute, overhead: float) -> StageMemory:
        """Memory of one GPU of pipeline rank ``rank``."""
        model, precision, counts = self.model, self.precision, self.counts
        pp, tp = self.parallel.pp, self.parallel.tp
        first, last = rank == 0, rank == pp - 1
        stage_layers = model.num_layers // pp
        sharded = counts["per_layer"] - counts["layer_norms"] - counts["qk_norm"]
        params = stage_layers * (sharded / tp + counts["layer_norms"] + counts["qk_norm"])
        params += self.vocab * model.hidden_size / tp if first else 0
        if last:  # a tied embedding is copied to the last stage when PP > 1
            copy = not model.tie_embeddings or pp > 1
            params += counts["final_norm"] + (self.vocab * model.hidden_size / tp if copy else 0)
        bf16_layers = 0
        if precision.first_last_layers_bf16:
            bf16_layers = min(stage_layers, precision.num_layers_at_start_in_bf16 * first
                              + precision.num_layers_at_end_in_bf16 * last)
        low = precision.uses_fp8 or precision.uses_fp4
        fp8_linear = (stage_layers - bf16_layers) * counts["linear_per_layer"] / tp if low else 0
        w, g, o = bytes_per_parameter(precision)
        weights = params * w - (fp8_linear * (w - 1) if precision.fp8_param else 0)
        # FP8 copies of the weights (+ transposes) that TE keeps across the microbatches of a step
        cache = fp8_linear * (1 if precision.fp8_param else 2)
        logits = self.tokens * self.vocab / tp * (self.act_bytes + 4) if last else 0  # logits + FP32 softmax
        name = "single stage" if pp == 1 else ("first stage" if first else "last stage")
        return StageMemory(name, int(params), int(weights), int(params * g), int(params * o / self.shard), int(cache),
                           int(self.activations(rank, bf16_layers, recompute)), int(logits), int(overhead))


def estimate(model: ModelConfig, precision: PrecisionConfig, parallel: ParallelConfig, *, seq_length: int,
             micro_batch_size: int, global_batch_size: int, recompute: Recompute | str = Recompute.none,
             recompute_num_layers: int | None = None, gpus: int, gpu: str, mfu: float = 0.40,
             vocab_size: int | None = None, headroom: float = 0.05, overhead_gib: float = 3.0) -> PlanReport:
    """Plan ``gpus`` GPUs of type ``gpu`` for this layout; raises :class:`SRPError` if the layout is invalid."""
    try:
        recompute = Recompute(recompute)
    except ValueError:
        raise SRPError(f"training.recompute={recompute!r}: expected one of {', '.join(Recompute)}") from None
    if not (0 < mfu <= 1 and 0 <= headroom < 1):
        raise SRPError(f"--mfu {mfu} must be in (0, 1] and --headroom {headroom} in [0, 1)")
    spec = get_gpu(gpu)
    validate_layout(model, precision, parallel, world_size=gpus, gpu=gpu, seq_length=seq_length,
                    micro_batch_size=micro_batch_size, global_batch_size=global_batch_size,
                    recompute=recompute, recompute_num_layers=recompute_num_layers)
    vocab = padded_vocab_size(model, parallel.tp, vocab_size)
    counts = analytic_parameter_count(model, vocab)
    dp = parallel.data_parallel_size(gpus)
    planner = _Planner(model, precision, parallel, seq_length, micro_batch_size,
                       global_batch_size // (micro_batch_size * dp), recompute_num_layers, vocab,
                       dp * parallel.cp if parallel.use_distributed_optimizer else 1, counts)
    ranks = [0] if parallel.pp == 1 else [0, parallel.pp - 1]
    stages = [planner.stage(r, recompute, overhead_gib * GIB) for r in ranks]
    peak_rank = ranks[max(range(len(stages)), key=lambda i: stages[i].total)]
    by_recompute = {k.value: planner.stage(peak_rank, k, 0).activations for k in Recompute}
    report = PlanReport(gpu=spec.name, gpus=gpus, layout=_layout(parallel, dp), parameters=counts["total"],
                        padded_vocab=vocab, recompute=recompute, stages=stages,
                        activations_by_recompute=by_recompute, capacity=spec.memory_bytes, headroom=headroom,
                        verdict="", mfu=mfu)
    _judge(report)
    _throughput(report, model, precision, spec, seq_length, global_batch_size, counts)
    return report


def _layout(parallel: ParallelConfig, dp: int) -> dict:
    return {"TP": parallel.tp, "PP": parallel.pp, "VPP": parallel.vpp, "CP": parallel.cp, "DP": dp,
            "SP": parallel.sequence_parallel, "distributed_optimizer": parallel.use_distributed_optimizer}


def _judge(report: PlanReport) -> None:
    peak, cap = report.peak, report.capacity
    usable = cap * (1 - report.headroom)
    report.verdict = "fits" if peak.total <= usable else ("tight" if peak.total <= cap else "does not fit")
    if report.verdict == "fits":
        return
    report.reasons.append(f"{peak.stage}: {peak.total / GIB:.1f} GiB needed, {cap / GIB:.1f} GiB on the GPU "
                          f"({usable / GIB:.1f} GiB after {report.headroom:.0%} headroom)")
    static = peak.weights + peak.gradients + peak.optimizer + peak.fp8_weight_cache + peak.overhead
    if static > usable:
        report.reasons.append(f"weights + gradients + optimizer state alone take {static / GIB:.1f} GiB: raise TP/PP "
                              "or use the distributed optimizer over more data-parallel ranks")
    elif report.recompute != Recompute.full:
        report.reasons.append(f"activations take {peak.activations / GIB:.1f} GiB: try training.recompute=full "
                              f"({report.activations_by_recompute['full'] / GIB:.1f} GiB), a smaller micro batch, "
                              "sequence/context parallelism or more pipeline stages")


def flops_per_token(model: ModelConfig, counts: dict[str, int], seq_length: int, vocab: int) -> float:
    """Model FLOPs per trained token: 6 x GEMM weights (forward + 2 backward) + causal attention + logits."""
    gemm = model.num_layers * counts["linear_per_layer"] + vocab * model.hidden_size
    attention = model.num_layers * seq_length * model.num_attention_heads * model.head_dim  # QK^T and AV, half
    return 6.0 * (gemm + attention)


def _throughput(report, model, precision, spec, seq_length, global_batch_size, counts) -> None:
    if precision.uses_fp4 and spec.fp4_tflops:
        peak = spec.fp4_tflops
    elif precision.uses_fp8 and spec.fp8_tflops:
        peak = spec.fp8_tflops
    else:  # FP32 trains on TF32 tensor cores: half the BF16 rate
        peak = spec.bf16_tflops / (2 if precision.dtype == DType.fp32 else 1)
    report.peak_tflops = peak
    report.flops_per_token = flops_per_token(model, counts, seq_length, report.padded_vocab)
    report.tokens_per_s = report.mfu * peak * 1e12 / report.flops_per_token * report.gpus
    report.step_time_s = global_batch_size * seq_length / report.tokens_per_s


def format_report(report: PlanReport) -> str:
    """The human-readable table."""
    layout = " ".join(f"{k}={v}" for k, v in report.layout.items())
    lines = [f"{report.gpus} x {report.gpu}: {layout}",
             f"parameters: {report.parameters / 1e9:.3f} B (padded vocabulary {report.padded_vocab})", ""]
    lines.append(f"{'memory per GPU (GiB)':<28}" + "".join(f"{s.stage:>14}" for s in report.stages))
    for key in ("parameters", "weights", "gradients", "optimizer", "fp8_weight_cache", "activations", "logits",
                "overhead", "total"):
        if key == "parameters":
            cells = "".join(f"{getattr(s, key) / 1e9:>13.3f}B" for s in report.stages)
        else:
            cells = "".join(f"{getattr(s, key) / GIB:>14.2f}" for s in report.stages)
        lines.append(f"  {key:<26}{cells}")
    acts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in report.activations_by_recompute.items())
    lines += [f"  activations by recompute (GiB, {report.peak.stage}): {acts}; using: {report.recompute}",
              f"  GPU memory {report.capacity / GIB:.1f} GiB, headroom {report.headroom:.0%}", "",
              f"throughput at MFU {report.mfu:.0%} of {report.peak_tflops:.0f} TFLOP/s: "
              f"{report.tokens_per_s / report.gpus:,.0f} tokens/s/GPU, {report.tokens_per_s:,.0f} tokens/s total, "
              f"{report.step_time_s:.2f} s/step ({report.flops_per_token / 1e9:.2f} GFLOP/token)",
              f"verdict: {report.verdict.upper()}"]
    lines += [f"  - {r}" for r in report.reasons]
    return "\n".join(lines)


def plan_from_config(config: str, overrides: Sequence[str], *, gpus: int, gpu: str, mfu: float = 0.40,
                     headroom: float = 0.05) -> PlanReport:
    """The plan of a pretraining config (file or ``conf/pretrain`` name) with ``key=value`` overrides."""
    cfg = load_pretrain_config(config, overrides)
    t = cfg.training
    # As srp pretrain: the tokenizer's vocabulary wins; here read from PREFIX.json, so no tokenizer is loaded.
    vocab_size = rendered_vocab_size(cfg.data)
    if vocab_size is None and cfg.model.vocab_size is None:
        raise SRPError("model.vocab_size is null and data.paths names no rendered dataset (its PREFIX.json records "
                       "the tokenizer's vocabulary): set model.vocab_size or data.paths")
    return estimate(cfg.model, cfg.precision, cfg.parallel, seq_length=t.seq_length,
                    micro_batch_size=t.micro_batch_size, global_batch_size=t.global_batch_size,
                    recompute=t.recompute, recompute_num_layers=t.recompute_num_layers, gpus=gpus,
                    gpu=gpu, mfu=mfu, headroom=headroom, vocab_size=vocab_size)
