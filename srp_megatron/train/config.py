"""The ``srp pretrain`` config: one YAML (``conf/pretrain/*.yaml``) plus ``key=value`` overrides.

Sections: ``model`` / ``precision`` / ``parallel`` (``train/model.py``, ``precision.py``,
``parallel.py``), ``training``, ``optimizer`` / ``scheduler`` (``optim.py``), ``data`` (``data.py``),
``checkpoint`` (``checkpoint.py``), ``logging`` (``metrics.py``) and ``device``. ``model`` and
``precision`` may name a preset (``model: {preset: tiny, num_layers: 4}``): the preset file is merged
first, the YAML's own keys over it, the command line last.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from srp_megatron.config.device import Device
from srp_megatron.config.loader import (
    ConfigError,
    load_preset,
    load_yaml,
    merge,
    parse_overrides,
    preset_names,
    resolve_preset,
    to_yaml,
)
from srp_megatron.errors import SRPError
from srp_megatron.train.checkpoint import CheckpointConfig
from srp_megatron.train.data import DataConfig
from srp_megatron.train.metrics import LoggingConfig
from srp_megatron.train.model import ModelConfig
from srp_megatron.train.optim import LRSchedule, OptimConfig, SchedulerConfig
from srp_megatron.train.parallel import ParallelConfig
from srp_megatron.train.precision import PrecisionConfig


class Recompute(enum.StrEnum):
    """Activation recomputation (megatron's ``recompute_granularity``)."""

    none = "none"
    selective = "selective"
    """Recompute attention's softmax/dropout only (cheap, large activation savings)."""
    full = "full"
    """Recompute whole layers (see ``recompute_num_layers``)."""


@dataclass
class TrainingConfig:
    """Batch sizes, length of the run, seeds, recomputation, evaluation."""

    seq_length: int = 2048
    """Tokens per sample."""
    micro_batch_size: int = 1
    """Samples per forward/backward pass on one data-parallel rank."""
    global_batch_size: int = 8
    """Samples per optimizer step over all data-parallel ranks (gradient accumulation makes up the rest)."""
    train_iters: int = 1000
    """Optimizer steps of the whole run (a resumed run continues up to this)."""
    seed: int = 1234
    """Seed of weights initialisation and data order."""
    recompute: Recompute = Recompute.none
    """Activation recomputation: ``none``, ``selective`` or ``full``."""
    recompute_num_layers: int | None = None
    """``full`` only: recompute the first N layers of each pipeline chunk; null recomputes every layer."""
    eval_interval: int = 0
    """Evaluate on the validation split every this many iterations (and at the end); 0 disables."""
    eval_iters: int = 10
    """Global batches per evaluation."""
    exit_interval: int = 0
    """Save a checkpoint and stop after every this many iterations (e.g. before a job's time limit); 0 never."""
    exit_on_nan: bool = True
    """Stop with an error naming the step and samples when the loss or gradient norm is NaN/Inf."""

    def __post_init__(self):
        for name in ("seq_length", "micro_batch_size", "global_batch_size", "train_iters", "eval_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"training.{name}={getattr(self, name)}: must be >= 1")
        if self.exit_interval < 0:
            raise ValueError(f"training.exit_interval={self.exit_interval}: must be >= 0 (0 never stops early)")
        if self.eval_interval < 0:
            raise ValueError(f"training.eval_interval={self.eval_interval}: must be >= 0 (0 disables evaluation)")
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"training.global_batch_size={self.global_batch_size} is not a multiple of "
                f"micro_batch_size={self.micro_batch_size}"
            )


@dataclass
class PretrainConfig:
    """Everything ``srp pretrain`` needs."""

    model: ModelConfig = MISSING
    """Architecture: ``model.preset`` names a ``conf/model`` file (required: there is no default model)."""
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    """Numeric precision (``precision.preset`` names a ``conf/precision`` file)."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """TP/PP/VPP/CP, sequence parallelism, distributed optimizer."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    """Batch sizes, iterations, seed, recomputation, evaluation."""
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    """AdamW and gradient clipping."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """Learning-rate schedule."""
    data: DataConfig = field(default_factory=DataConfig)
    """Rendered datasets, blend, split, tokenizer, loss policy."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Saving and resuming."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Run directory, TensorBoard, W&B, log interval."""
    device: Device = Device.auto
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""

    def __post_init__(self):
        self._validate_data()
        self._validate_schedule()

    def require_data(self) -> None:
        """Training needs data (``srp plan`` does not): raise ``SRPError`` when no prefixes are given."""
        if not (self.data.paths or self.data.train_paths):
            raise SRPError("data.paths is empty: give rendered dataset prefixes (srp render outputs), e.g. "
                           "data.paths=[/data/fineweb_srp]")

    def _validate_data(self) -> None:
        no_valid = not self.data.valid_paths if self.data.per_split else self.data.split_weights()[1] == 0
        if self.training.eval_interval and no_valid:
            raise ValueError(f"training.eval_interval={self.training.eval_interval} but there is no validation "
                             "data: give data.split a validation share (or data.valid_paths), or set "
                             "training.eval_interval=0")

    def _validate_schedule(self) -> None:
        sched, iters = self.scheduler, self.training.train_iters
        decay = sched.resolved_decay_iters(iters)
        if sched.style != LRSchedule.constant and sched.warmup_iters >= decay:
            raise ValueError(f"scheduler.warmup_iters={sched.warmup_iters} must be < the decay end ({decay} "
                             "iterations, scheduler.decay_iters or training.train_iters)")
        if sched.warmup_init_lr > self.optimizer.lr:
            raise ValueError(f"scheduler.warmup_init_lr={sched.warmup_init_lr} exceeds "
                             f"optimizer.lr={self.optimizer.lr}")

    @property
    def checkpoint_dir(self) -> str:
        """Where checkpoints are written."""
        return self.checkpoint.save_dir or os.path.join(self.logging.run_dir, "checkpoints")

    @property
    def load_dir(self) -> str:
        """Where a resume reads from."""
        return self.checkpoint.load_dir or self.checkpoint_dir

    @property
    def data_cache_dir(self) -> str:
        """Where megatron's dataset index caches go."""
        return self.data.cache_dir or os.path.join(self.logging.run_dir, "data_cache")


#: Sections that may name a preset file (``conf/<section>/<name>.yaml``).
_PRESET_SECTIONS = ("model", "precision")


def _preset_layer(section: str, name: str, source: str) -> DictConfig:
    """``{section: <preset values>}`` for a preset named in ``source``."""
    try:
        values = load_preset(str(name), section)
    except ConfigError as exc:
        raise ConfigError(f"{source}: key '{section}.preset': {exc}") from None
    return OmegaConf.create({section: values})


def load_pretrain_config(path: str | None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """``PretrainConfig`` from defaults < presets < ``path`` (a file or ``conf/pretrain`` name) < overrides.

    Unknown keys, wrong types and invalid values raise ``ConfigError`` naming the key and the source.
    """
    yaml_cfg, source = OmegaConf.create({}), "defaults"
    if path:
        source = resolve_preset(path, "pretrain")
        yaml_cfg = load_yaml(source)
    cli = parse_overrides(overrides) if overrides else OmegaConf.create({})
    cfg = OmegaConf.structured(PretrainConfig)
    for section in _PRESET_SECTIONS:
        cli_preset = OmegaConf.select(cli, f"{section}.preset")
        name, where = (cli_preset, "command line") if cli_preset else (OmegaConf.select(yaml_cfg, f"{section}.preset"),
                                                                      source)
        if name:
            cfg = merge(cfg, _preset_layer(section, name, where), f"{where} ({section} preset '{name}')")
    cfg = merge(cfg, yaml_cfg, source)
    if overrides:
        cfg = merge(cfg, cli, "command line")
    sources = source + (", command line" if overrides else "")
    if OmegaConf.is_missing(cfg, "model"):
        raise ConfigError(f"{sources}: no model: set model.preset to one of {', '.join(preset_names('model'))} "
                          "(or give the model's shape under model:)")
    try:
        return OmegaConf.to_object(cfg)  # runs every __post_init__
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{sources}: {exc}") from None
    except OmegaConfBaseException as exc:  # a missing mandatory value
        key = getattr(exc, "full_key", None) or "<root>"
        raise ConfigError(f"{sources}: key '{key}': {str(exc).splitlines()[0]}") from None


def write_resolved_config(cfg: PretrainConfig) -> str:
    """Save the resolved config as ``RUN_DIR/config.yaml`` (presets and overrides applied); returns the path."""
    path = os.path.join(cfg.logging.run_dir, "config.yaml")
    os.makedirs(cfg.logging.run_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(to_yaml(cfg))
    return path
