"""The ``srp pretrain`` trainer (usage: ``srp pretrain --help``): a megatron-core ``GPTModel`` trained on rendered
SRP datasets through megatron's own schedules, optimizer and checkpointing, on CPU (gloo) or GPUs (NCCL).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.transformer.module import Float16Module
from megatron.core.utils import get_attr_wrapped_model

from srp_megatron.config.loader import to_dict
from srp_megatron.errors import SRPError
from srp_megatron.formats.rendered import SpanType
from srp_megatron.prep.tokenizer import load_tokenizer
from srp_megatron.train import checkpoint, distributed
from srp_megatron.train.checkpoint import save_checkpoint
from srp_megatron.train.config import PretrainConfig, write_resolved_config
from srp_megatron.train.cpu import cuda_calls_on_cpu
from srp_megatron.train.data import BatchSpec, build_datasets, build_loader, chunk_iterators, get_batch, tokenizer_path
from srp_megatron.train.distributed import teardown
from srp_megatron.train.gpus import runtime_compute_capability
from srp_megatron.train.metrics import (
    MetricsProcessor,
    loss_func,
    num_floating_point_operations,
    peak_flops_per_gpu,
    report_metrics,
)
from srp_megatron.train.model import build_gpt_model, build_transformer_config, padded_vocab_size, te_available
from srp_megatron.train.optim import build_optimizer, build_scheduler, current_lr
from srp_megatron.train.validation import validate_layout

logger = logging.getLogger(__name__)


class Trainer:
    """One SRP pretraining run, as a context manager::

        with Trainer(cfg) as trainer:
            trainer.train()

    Entering builds the run in this order: validation, distributed (process groups, parallel state), the CPU
    accommodations (``train/cpu.py``; entered here once and held until exit, a no-op with CUDA), seeds,
    tokenizer, model, optimizer, scheduler, data, checkpoint resume, metrics. Exiting flushes the metrics,
    leaves the CPU accommodations and tears the process groups down, on every path (an error while building
    included).
    """

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        self._exit: contextlib.ExitStack | None = None

    def __enter__(self) -> Trainer:
        if self._exit is not None:
            raise RuntimeError("this Trainer is already entered")
        self._exit = contextlib.ExitStack()
        try:
            self._exit.callback(teardown)
            self._setup(self._exit)
        except BaseException:
            self._exit, stack = None, self._exit
            stack.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._exit, stack = None, self._exit
        stack.close()

    def _setup(self, exit_stack: contextlib.ExitStack) -> None:
        """Build the run (see the class doc); what must be undone is pushed on ``exit_stack``."""
        cfg = self.cfg
        cfg.require_data()
        t, p = cfg.training, cfg.parallel
        use_cuda = distributed.use_cuda(cfg.device.value)
        if p.tp_comm_overlap:
            raise SRPError("parallel.tp_comm_overlap=true: not supported by srp pretrain (TE userbuffers); set false")
        validate_layout(cfg.model, cfg.precision, p, world_size=int(os.environ.get("WORLD_SIZE", "1")),
                        gpu=None if use_cuda else "cpu", seq_length=t.seq_length,
                        micro_batch_size=t.micro_batch_size, global_batch_size=t.global_batch_size,
                        recompute=t.recompute.value, recompute_num_layers=t.recompute_num_layers)
        advice = distributed.cuda_connections_advice(p.tp, p.cp, runtime_compute_capability() if use_cuda else None)
        if advice and int(os.environ.get("RANK", "0")) == 0:
            logger.warning("%s", advice)
        self.env = distributed.init_distributed(
            use_cuda=use_cuda, tensor_parallel=p.tp, pipeline_parallel=p.pp,
            virtual_pipeline_parallel=p.virtual_pipeline_model_parallel_size, context_parallel=p.cp)
        exit_stack.enter_context(cuda_calls_on_cpu())
        distributed.set_seeds(t.seed, use_cuda)
        self.tokenizer = load_tokenizer(tokenizer_path(cfg.data))
        self.num_microbatches = t.global_batch_size // (t.micro_batch_size * distributed.data_parallel_size())
        self.span_names = [s.name for s in SpanType] if cfg.data.return_span_types else []
        self.batch_spec = BatchSpec(t.micro_batch_size, t.seq_length, attention_mask=not self._uses_te(),
                                    span_types=cfg.data.return_span_types)
        self.model = self._build_model()
        self._build_optimizer_and_scheduler()
        self.train_ds, self.valid_ds = self._build_datasets()
        self.iteration, self.consumed_samples = 0, 0
        self._interval_report = None  # summed loss report since the last log line
        self._resume()
        data, mbs, on_gpu = cfg.data, t.micro_batch_size, self.env.on_gpu
        train_loader = build_loader(self.train_ds, self.consumed_samples, mbs, data.num_workers, on_gpu)
        self.train_iterators = chunk_iterators(train_loader, self.model)
        self.valid_loader = build_loader(self.valid_ds, 0, mbs, data.num_workers, on_gpu)
        self.metrics = self._build_metrics()
        exit_stack.callback(self.metrics.close)
        if self.env.rank == 0:
            write_resolved_config(cfg)

    # -- construction ------------------------------------------------------------------------------
    def _uses_te(self) -> bool:
        return self.env.on_gpu and te_available()

    def _build_model(self) -> list:
        """Model chunks (one per virtual pipeline stage), on device, 16-bit wrapped, in megatron's DDP."""
        cfg = self.cfg
        self.tconfig = build_transformer_config(
            cfg.model, cfg.precision, cfg.parallel, recompute=cfg.training.recompute.value,
            recompute_num_layers=cfg.training.recompute_num_layers, use_te=self._uses_te(),
            calculate_per_token_loss=True,  # loss = sum over the global batch / its trained tokens
        )
        vpp = cfg.parallel.virtual_pipeline_model_parallel_size
        ddp_config = DistributedDataParallelConfig(**cfg.precision.ddp_config_kwargs(),
                                                   **cfg.parallel.ddp_config_kwargs())
        chunks = []
        for vp_stage in range(vpp) if vpp else [None]:
            chunk = build_gpt_model(
                cfg.model, cfg.precision, cfg.parallel, vocab_size=self.tokenizer.vocab_size,
                max_sequence_length=cfg.training.seq_length, config=self.tconfig, use_te=self._uses_te(),
                pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
                post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
                vp_stage=vp_stage,
            )
            for param in chunk.parameters():
                tensor_parallel.set_defaults_if_not_set_tensor_model_parallel_attributes(param)
            if self.env.on_gpu:
                chunk.cuda(torch.cuda.current_device())
            if self.tconfig.bf16 or self.tconfig.fp16:
                chunk = Float16Module(self.tconfig, chunk)
            chunks.append(DistributedDataParallel(self.tconfig, ddp_config, chunk, disable_bucketing=bool(vp_stage)))
        params = sum(p.numel() for c in chunks for p in c.parameters())
        logger.info("rank %d: %d parameters on this (TP, PP) rank", self.env.rank, params)
        return chunks

    def _build_optimizer_and_scheduler(self) -> None:
        cfg, tc = self.cfg, self.tconfig
        self.optimizer = build_optimizer(
            self.model, cfg.optimizer, bf16=tc.bf16, fp16=tc.fp16, params_dtype=tc.params_dtype,
            use_distributed_optimizer=cfg.parallel.use_distributed_optimizer,
            overlap_param_gather=cfg.parallel.overlap_param_gather,
            fp8_recipe=tc.fp8_recipe if tc.fp8 else None,
        )
        self.scheduler = build_scheduler(self.optimizer, cfg.optimizer, cfg.scheduler,
                                         train_iters=cfg.training.train_iters,
                                         global_batch_size=cfg.training.global_batch_size)
        # As Megatron-LM's train(): the schedules call these hooks.
        tc.grad_scale_func = self.optimizer.scale_loss
        tc.finalize_model_grads_func = finalize_model_grads

        def per_chunk(name: str) -> Any:
            """A method of every model chunk (the schedules take one, or a list with VPP)."""
            funcs = [getattr(c, name) for c in self.model]
            return funcs if len(funcs) > 1 else funcs[0]

        if cfg.parallel.overlap_grad_reduce:
            tc.no_sync_func, tc.grad_sync_func = per_chunk("no_sync"), per_chunk("start_grad_sync")
        if cfg.parallel.align_param_gather:  # interleaved schedule only, as Megatron-LM
            tc.param_sync_func = per_chunk("start_param_sync")

    def _build_datasets(self) -> tuple:
        t = self.cfg.training
        # Every evaluation reads the same first eval_iters global batches of the validation split.
        sizes = [t.train_iters * t.global_batch_size, t.eval_iters * t.global_batch_size if t.eval_interval else 0, 0]
        return build_datasets(self.cfg.data, self.tokenizer, sizes, seq_length=t.seq_length, seed=t.seed,
                              cache_dir=self.cfg.data_cache_dir, create_attention_mask=self.batch_spec.attention_mask)

    def _resume(self) -> None:
        ck = self.cfg.checkpoint
        if ck.save_at_end or ck.save_interval or self.cfg.training.exit_interval:
            checkpoint.require_checkpoint_dependencies()  # fail now, not at the first save
        if ck.resume == checkpoint.ResumeMode.never:
            return
        if checkpoint.latest_iteration(self.cfg.load_dir) is None:
            if ck.resume == checkpoint.ResumeMode.required:
                raise SRPError(f"checkpoint.resume=required but '{self.cfg.load_dir}' holds no checkpoint")
            return
        progress = checkpoint.load_checkpoint(ck, self.cfg.load_dir, self.model, self.optimizer, self.scheduler,
                                   use_distributed_optimizer=self.cfg.parallel.use_distributed_optimizer,
                                   on_gpu=self.env.on_gpu)
        self.load_state_dict(progress)

    def _build_metrics(self):
        t = self.cfg.training
        vocab = padded_vocab_size(self.cfg.model, self.cfg.parallel.tp, self.tokenizer.vocab_size)
        flops = num_floating_point_operations(self.tconfig, vocab, t.seq_length, t.global_batch_size)
        peak = None
        if self.env.on_gpu:
            peak = peak_flops_per_gpu(torch.cuda.get_device_name())
        return MetricsProcessor(
            self.cfg.logging, writer=self.env.is_last_rank, train_iters=t.train_iters,
            tokens_per_step=t.global_batch_size * t.seq_length, flops_per_step=flops,
            num_gpus=self.env.world_size if self.env.on_gpu else 0, peak_flops=peak, run_config=to_dict(self.cfg),
        )

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Training progress: iteration and data position (saved in every checkpoint)."""
        return {"iteration": self.iteration, "consumed_train_samples": self.consumed_samples}

    def load_state_dict(self, state: dict) -> None:
        """Restore training progress."""
        self.iteration = int(state["iteration"])
        self.consumed_samples = int(state.get("consumed_train_samples",
                                              self.iteration * self.cfg.training.global_batch_size))

    # -- one step ------------------------------------------------------------------------------
    def _forward_step(self, data_iterator: Any, model: Any):
        """megatron's ``forward_step_func``: a micro-batch through ``model``, with its loss function."""
        vp_stage = get_attr_wrapped_model(model, "vp_stage", allow_none=True)
        batch = get_batch(data_iterator, self.batch_spec, self.env.device, vp_stage)
        output = model(batch.get("tokens"), batch.get("position_ids"), batch.get("attention_mask"),
                       labels=batch.get("labels"), loss_mask=batch.get("loss_mask"))
        return output, partial(loss_func, batch.get("loss_mask"), batch.get("span_types"), len(self.span_names))

    def _forward_backward(self, iterators: list, forward_only: bool) -> Any:
        """All micro-batches of one global batch; returns the report summed over DP/CP ranks (every rank)."""
        t = self.cfg.training
        reports = get_forward_backward_func()(
            forward_step_func=self._forward_step, data_iterator=iterators if len(iterators) > 1 else iterators[0],
            model=self.model, num_microbatches=self.num_microbatches, seq_length=t.seq_length,
            micro_batch_size=t.micro_batch_size, forward_only=forward_only,
        )
        width = 2 + 2 * len(self.span_names)
        local = torch.stack(reports).sum(0).double() if reports else torch.zeros(width, dtype=torch.float64)
        local = local.to(self.env.device)
        # One all-reduce over the world gives every rank the global numbers (NaN checks agree everywhere);
        # ranks off the last stage add zeros and TP ranks hold identical losses, hence the division.
        dist.all_reduce(local)
        return (local / parallel_state.get_tensor_model_parallel_world_size()).cpu()

    def _check_finite(self, what: str, value: float) -> None:
        t = self.cfg.training
        if t.exit_on_nan and not math.isfinite(value):
            first = self.consumed_samples
            raise SRPError(
                f"step {self.iteration + 1}: {what} is {value} in the global batch of training samples "
                f"{first}..{first + t.global_batch_size - 1} (dataset indices; consumed samples before the step). "
                "Lower optimizer.lr, check those samples, or resume from the last checkpoint"
            )

    def train_step(self) -> dict:
        """One optimizer step: micro-batches with gradient accumulation, loss over the global trained tokens,
        finite check, clipping and AdamW (megatron's optimizer), schedule. Returns the step's metrics."""
        for chunk in self.model:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        report = self._forward_backward(self.train_iterators, forward_only=False)
        # Losses are logged as token-weighted means over the log interval, like Megatron-LM's.
        self._interval_report = report if self._interval_report is None else self._interval_report + report
        metrics = report_metrics(report, self.span_names)
        self._check_finite("the loss", metrics["loss/total(nats)"])
        ok, grad_norm, _ = self.optimizer.step()
        if grad_norm is not None:
            self._check_finite("the gradient norm", float(grad_norm))
            metrics["optim/grad_norm"] = float(grad_norm)
        if ok:  # False only when an fp16 loss scale overflowed: megatron skips the update
            self.scheduler.step(increment=self.cfg.training.global_batch_size)
        else:
            metrics["optim/skipped_steps(count)"] = 1.0
        self.iteration += 1
        self.consumed_samples += self.cfg.training.global_batch_size
        metrics["optim/lr"] = current_lr(self.optimizer)
        return metrics

    def evaluate(self) -> dict:
        """Validation loss (total and per span type) over ``eval_iters`` global batches from sample 0."""
        iterators = chunk_iterators(self.valid_loader, self.model)
        for chunk in self.model:
            chunk.eval()
        total = None
        with torch.no_grad():
            for _ in range(self.cfg.training.eval_iters):
                report = self._forward_backward(iterators, forward_only=True)
                total = report if total is None else total + report
        for chunk in self.model:
            chunk.train()
        return report_metrics(total, self.span_names)

    def save(self) -> None:
        """Checkpoint the run at the current iteration."""
        save_checkpoint(self.cfg.checkpoint, self.cfg.checkpoint_dir, self.iteration, self.model, self.optimizer,
                        self.scheduler, progress=self.state_dict(),
                        use_distributed_optimizer=self.cfg.parallel.use_distributed_optimizer,
                        on_gpu=self.env.on_gpu)

    def train(self) -> None:
        """Train from the current iteration to ``train_iters``: log, evaluate and save on their intervals."""
        t, ck = self.cfg.training, self.cfg.checkpoint
        if self.iteration >= t.train_iters:
            logger.info("nothing to do: iteration %d >= training.train_iters=%d", self.iteration, t.train_iters)
            return
        self.metrics.reset_timer(self.iteration)
        while self.iteration < t.train_iters:
            metrics = self.train_step()
            step, last = self.iteration, self.iteration == t.train_iters
            if self.metrics.should_log(step):
                metrics.update(report_metrics(self._interval_report, self.span_names))
                self._interval_report = None
                self.metrics.log(step, {**metrics, **self.metrics.throughput(step)}, "train")
            exiting = bool(t.exit_interval) and step % t.exit_interval == 0 and not last
            evaluating = bool(t.eval_interval) and (step % t.eval_interval == 0 or last)
            saving = bool(ck.save_interval and step % ck.save_interval == 0) or (last and ck.save_at_end) or exiting
            if evaluating or saving or last:  # the last gather leaves the weights current, as Megatron-LM
                with self._params_gathered():
                    if evaluating:
                        self.metrics.log(step, self.evaluate(), "valid")
                    if saving:
                        self.save()
                self.metrics.reset_timer(step)
            if exiting:
                logger.info("training.exit_interval=%d: stopping after iteration %d (checkpoint saved)",
                            t.exit_interval, step)
                return

    @contextlib.contextmanager
    def _params_gathered(self) -> Iterator[None]:
        """Finish the distributed optimizer's overlapped parameter all-gather (and pause its forward hooks)
        around evaluation and saving, as Megatron-LM does; a no-op without ``overlap_param_gather``."""
        p = self.cfg.parallel
        if not (p.use_distributed_optimizer and p.overlap_param_gather):
            yield
            return
        if hasattr(self.optimizer, "prepare_model_params_for_param_sync"):  # megatron-core >= 0.17
            self.optimizer.prepare_model_params_for_param_sync()
        for chunk in self.model:
            chunk.disable_forward_pre_hook(param_sync=True)
        try:
            yield
        finally:
            for chunk in self.model:
                chunk.enable_forward_pre_hook()


def run_pretrain(cfg: PretrainConfig) -> str:
    """Train per ``cfg`` (the process groups are torn down on every path); returns the run directory."""
    with Trainer(cfg) as trainer:
        trainer.train()
    return cfg.logging.run_dir
