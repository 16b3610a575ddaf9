"""The ``srp pretrain`` driver: config loading, the loss, per-span losses, schedules, the sampler, NaN stops."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from pretrain_helpers import cpu_only, read_metrics, train

from srp_megatron.config.loader import ConfigError, preset_names
from srp_megatron.errors import SRPError
from srp_megatron.train.config import load_pretrain_config
from srp_megatron.train.data import PretrainingSampler, parse_blend
from srp_megatron.train.metrics import loss_func, report_metrics
from srp_megatron.train.optim import build_scheduler
from srp_megatron.train.validation import validate_layout

SPANS = ["text", "reflection", "reflection_marker", "unsafe_text"]
RUN = ["training.train_iters=3", "training.global_batch_size=8", "training.micro_batch_size=2",
       "scheduler.warmup_iters=1", "checkpoint.save_at_end=false"]


# -- config ----------------------------------------------------------------------------------------
def test_presets_merge_under_yaml_keys_and_overrides_win(tmp_path):
    yaml = tmp_path / "run.yaml"
    yaml.write_text("model: {preset: tiny, num_layers: 3}\nprecision: {preset: fp32-cpu}\ndata: {paths: [/d/x]}\n")
    cfg = load_pretrain_config(str(yaml), ["model.hidden_size=128", "precision.grad_reduce_in_fp32=false"])
    assert (cfg.model.preset, cfg.model.num_layers, cfg.model.hidden_size) == ("tiny", 3, 128)  # yaml, cli
    assert cfg.model.ffn_hidden_size == 256 and cfg.model.tie_embeddings  # from conf/model/tiny.yaml
    assert cfg.precision.dtype.value == "fp32" and not cfg.precision.grad_reduce_in_fp32
    assert load_pretrain_config(str(yaml), ["model.preset=tiny-gqa"]).model.num_query_groups == 2


@pytest.mark.parametrize(("overrides", "match"), [
    (["training.bogus=1"], r"command line: key 'training.bogus'"),
    (["training.train_iters=many"], r"key 'training.train_iters'"),
    (["model.preset=huge"], r"key 'model.preset'.*known presets in conf/model: .*tiny"),
    (["data.paths=[0.5, /a, /b]"], r"weight/prefix pairs"),
    (["scheduler.warmup_iters=100"], r"scheduler.warmup_iters=100 must be < the decay end"),
    (["training.global_batch_size=6", "training.micro_batch_size=4"], r"not a multiple of micro_batch_size=4"),
    (["data.loss_policy=nonsense"], r"nonsense"),
    (["data.loss_policy_overrides={reflections: mask}"], r"unknown span type 'reflections'"),
    (["data.split=100,0,0"], r"no validation data"),
    (["optimizer.min_lr=1.0"], r"optimizer.min_lr=1.0"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_pretrain_config("tiny-cpu", ["data.paths=[/d/x]", *overrides])


def test_training_requires_data_but_planning_does_not():
    cfg = load_pretrain_config("tiny-cpu")  # srp plan loads configs without data
    with pytest.raises(SRPError, match=r"data.paths is empty"):
        cfg.require_data()


def test_prefix_globs_expand_to_rendered_shards(tmp_path):
    for name in ("srp_00001", "srp_00000", "other"):
        for suffix in ("", "_spans"):
            (tmp_path / f"{name}{suffix}.bin").write_bytes(b"")
    prefixes, weights = parse_blend([str(tmp_path / "srp_*")], "data.paths")
    assert prefixes == [str(tmp_path / "srp_00000"), str(tmp_path / "srp_00001")] and weights is None
    with pytest.raises(ValueError, match="matches no rendered dataset"):
        parse_blend([str(tmp_path / "nope_*")], "data.paths")
    with pytest.raises(ValueError, match="a glob cannot take a weight"):
        parse_blend(["0.5", str(tmp_path / "srp_*"), "0.5", str(tmp_path / "other")], "data.paths")


def test_yaml_errors_name_the_file(tmp_path):
    yaml = tmp_path / "bad.yaml"
    yaml.write_text("model: {preset: tiny}\ntraining: {seq_lenght: 64}\ndata: {paths: [/d/x]}\n")
    with pytest.raises(ConfigError, match=rf"{yaml}: key 'training.seq_lenght'"):
        load_pretrain_config(str(yaml))
    with pytest.raises(ConfigError, match="no model: set model.preset"):
        load_pretrain_config(None, ["data.paths=[/d/x]"])


@pytest.mark.parametrize(("name", "gpus"), [("smollm2-1.7b-srp", 8), ("llama3-8b-srp-fp8", 8),
                                            ("llama3-70b-srp", 64), ("tiny-cpu", 1)])
def test_shipped_presets_are_valid_layouts(name, gpus):
    cfg = load_pretrain_config(name, ["data.paths=[/d/x]"])
    t = cfg.training
    validate_layout(cfg.model, cfg.precision, cfg.parallel, world_size=gpus,
                    gpu="cpu" if name == "tiny-cpu" else "h100-80gb", seq_length=t.seq_length,
                    micro_batch_size=t.micro_batch_size, global_batch_size=t.global_batch_size,
                    recompute=t.recompute.value, recompute_num_layers=t.recompute_num_layers)
    assert set(preset_names("pretrain")) >= {"tiny-cpu", "smollm2-1.7b-srp", "llama3-8b-srp-fp8", "llama3-70b-srp"}


# -- loss ------------------------------------------------------------------------------------------
def test_loss_func_is_megatrons_with_per_span_sums():
    g = torch.Generator().manual_seed(0)
    per_token = torch.rand(3, 7, generator=g) * 5
    mask = (torch.rand(3, 7, generator=g) > 0.3).float()
    spans = torch.randint(0, 4, (3, 7), generator=g)
    loss, num_tokens, report = loss_func(mask, spans, 4, per_token)
    # Megatron-LM's pretrain_gpt.loss_func: sum(loss * mask) and int(mask.sum()).
    assert loss.item() == pytest.approx(float((per_token * mask).sum()))
    assert num_tokens.dtype == torch.int32 and num_tokens.item() == int(mask.sum())
    brute_sums, brute_counts = [0.0] * 4, [0.0] * 4
    flat = (per_token.flatten().tolist(), mask.flatten().tolist(), spans.flatten().tolist())
    for value, m, k in zip(*flat, strict=True):
        brute_sums[k] += value * m
        brute_counts[k] += m
    assert report[2:6].tolist() == pytest.approx(brute_sums)
    assert report[6:].tolist() == brute_counts
    without = loss_func(mask, None, 4, per_token)[2]
    assert without.tolist() == pytest.approx(report[:2].tolist())


@cpu_only
def test_per_span_losses_add_up_to_the_total(tmp_path, srp_prefix):
    records = train(str(tmp_path / "run"), srp_prefix, *RUN)
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        counts = {n: r.get(f"tokens/loss_{n}(count)", 0.0) for n in SPANS}
        assert sum(counts.values()) == r["tokens/loss_trained(count)"] == 8 * 64  # the paper policy trains all
        weighted = sum(r[f"loss/{n}(nats)"] * c for n, c in counts.items() if c)
        assert weighted / sum(counts.values()) == pytest.approx(r["loss/total(nats)"], rel=1e-5)
        assert counts["reflection"] > 0 and counts["text"] > counts["reflection"]


@cpu_only
def test_a_masking_policy_reaches_the_loss(tmp_path, srp_prefix):
    records = train(str(tmp_path / "run"), srp_prefix, *RUN, "data.loss_policy=reflection_context")
    for r in records:
        assert "loss/reflection(nats)" not in r and "loss/reflection_marker(nats)" not in r
        kept = r["tokens/loss_text(count)"] + r.get("tokens/loss_unsafe_text(count)", 0.0)
        assert r["tokens/loss_trained(count)"] == kept
        assert r["tokens/loss_trained(count)"] < 8 * 64


def test_report_metrics_total_is_independent_of_spans():
    report = torch.tensor([10.0, 4.0, 6.0, 4.0, 0.0, 0.0, 3.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    out = report_metrics(report, SPANS)
    assert out["loss/total(nats)"] == 2.5 and out["loss/text(nats)"] == 2.0 and out["loss/reflection(nats)"] == 4.0


@cpu_only
def test_nan_loss_stops_naming_step_and_samples(tmp_path, srp_prefix, monkeypatch):
    from srp_megatron.train import metrics, trainer

    real = metrics.loss_func
    calls = {"n": 0}

    def poisoned(loss_mask, span_types, k, output):
        calls["n"] += 1
        if calls["n"] > 4:  # step 1 has 4 micro-batches; poison step 2
            output = output * float("nan")
        return real(loss_mask, span_types, k, output)

    monkeypatch.setattr(trainer, "loss_func", poisoned)
    with pytest.raises(SRPError, match=r"step 2: the loss is nan in the global batch of training samples 8\.\.15"):
        train(str(tmp_path / "run"), srp_prefix, *RUN, steps=3)
    assert [r["step"] for r in read_metrics(str(tmp_path / "run"))] == []  # stepped by hand: nothing logged


# -- schedule and sampler --------------------------------------------------------------------------
def _lr_curve(style: str, **sched) -> list[float]:
    cfg = load_pretrain_config("tiny-cpu", ["data.paths=[/d/x]", "training.train_iters=20", "optimizer.lr=1.0",
                                            "optimizer.min_lr=0.1", f"scheduler.style={style}",
                                            *[f"scheduler.{k}={v}" for k, v in sched.items()]])
    opt = SimpleNamespace(param_groups=[{"params": [], "default_config": True}])
    sched_ = build_scheduler(opt, cfg.optimizer, cfg.scheduler, train_iters=20, global_batch_size=8)
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"])
        sched_.step(increment=8)
    return lrs


def test_wsd_schedule_warms_up_holds_then_decays_linearly():
    lrs = _lr_curve("wsd", warmup_iters=4, wsd_decay_fraction=0.25)
    # warmup 0..4, stable to iteration 15, linear decay over the last 5 iterations to min_lr.
    expected = [i / 4 for i in range(5)] + [1.0] * 11 + [1.0 - 0.9 * (i / 5) for i in range(1, 6)]
    assert lrs == pytest.approx(expected)


def test_cosine_schedule():
    lrs = _lr_curve("cosine", warmup_iters=2)
    expected = [0.0, 0.5] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - 2) / 18)) for i in range(2, 21)]
    assert lrs == pytest.approx(expected)


def test_sampler_covers_global_batches_in_order_and_resumes():
    mbs, dp, total = 2, 3, 40
    per_rank = [list(PretrainingSampler(total, 0, mbs, r, dp)) for r in range(dp)]
    flat = [i for step in zip(*per_rank, strict=True) for batch in step for i in batch]
    assert flat == list(range(36))  # consecutive, no gaps or repeats; the last partial batch dropped
    resumed = [list(PretrainingSampler(total, 12, mbs, r, dp)) for r in range(dp)]
    assert resumed == [batches[2:] for batches in per_rank]
    with pytest.raises(SRPError, match="past the end"):
        PretrainingSampler(10, 11, 1, 0, 1)


def test_parse_blend():
    assert parse_blend([], "k") is None
    assert parse_blend(["/a", "/b"], "k") == (["/a", "/b"], None)
    assert parse_blend(["0.3", "/a", "0.7", "/b"], "k") == (["/a", "/b"], [0.3, 0.7])
    with pytest.raises(ValueError, match="k="):
        parse_blend(["0.3", "/a", "/b", "0.7"], "k")


@cpu_only
def test_bf16_mixed_precision_tracks_fp32(tmp_path, srp_prefix):
    """The GPU default (``precision=bf16``) on CPU: bf16 weights in megatron's ``Float16Module``, fp32 master
    weights in ``Float16OptimizerWithFloat16Params``, fp32 gradient reduction; the loss curve follows the
    FP32 run's within bf16 rounding and both train."""
    from megatron.core.optimizer.optimizer import Float16OptimizerWithFloat16Params
    from megatron.core.transformer.module import Float16Module

    from srp_megatron.train.trainer import Trainer

    run = [*RUN, "training.train_iters=6", "scheduler.warmup_iters=2", "checkpoint.save_at_end=false"]
    fp32 = train(str(tmp_path / "fp32"), srp_prefix, *run)
    cfg = load_pretrain_config("tiny-cpu", [f"data.paths=[{srp_prefix}]", f"logging.run_dir={tmp_path / 'bf16'}", *run,
                                            "logging.log_interval=1", "logging.tensorboard=false",
                                            "training.eval_interval=0", "precision.preset=bf16"])
    with Trainer(cfg) as trainer:
        assert isinstance(trainer.model[0].module, Float16Module)
        assert {p.dtype for p in trainer.model[0].parameters()} == {torch.bfloat16}
        optimizers = getattr(trainer.optimizer, "chained_optimizers", [trainer.optimizer])
        assert all(isinstance(o, Float16OptimizerWithFloat16Params) for o in optimizers)
        masters = [p for o in optimizers for g in o.fp32_from_float16_groups for p in g]
        assert masters and {p.dtype for p in masters} == {torch.float32}
        assert {p.main_grad.dtype for p in trainer.model[0].parameters()} == {torch.float32}  # grad_reduce_in_fp32
        trainer.train()
    bf16 = read_metrics(str(tmp_path / "bf16"))
    assert [r["step"] for r in bf16] == [r["step"] for r in fp32] == list(range(1, 7))
    for a, b in zip(fp32, bf16, strict=True):
        assert b["loss/total(nats)"] == pytest.approx(a["loss/total(nats)"], rel=2e-2), a["step"]
    assert bf16[-1]["loss/total(nats)"] < bf16[0]["loss/total(nats)"] - 0.5


@cpu_only
def test_activation_recompute_reruns_what_it_should_and_changes_no_number(tmp_path, srp_prefix):
    """Each recompute setting (the 70B preset uses full with recompute_num_layers=1) reruns exactly the
    modules megatron should in backward, counted by forward hooks, and trains to the same numbers as none."""
    from srp_megatron.train.trainer import Trainer

    variants = {  # module -> forward calls per micro-batch in one training step
        "none": [], "full": ["training.recompute=full"],
        "full-1": ["training.recompute=full", "training.recompute_num_layers=1"],
        "selective": ["training.recompute=selective"],
    }
    counts, curves = {}, {}
    for name, overrides in variants.items():
        cfg = load_pretrain_config("tiny-cpu", [f"data.paths=[{srp_prefix}]", f"logging.run_dir={tmp_path / name}",
                                                *RUN, "logging.tensorboard=false", "training.eval_interval=0",
                                                *overrides])
        with Trainer(cfg) as trainer:
            calls: Counter[str] = Counter()
            hooks = [m.register_forward_hook(lambda mod, args, out, key=key, calls=calls: calls.update([key]))
                     for key, m in trainer.model[0].named_modules()
                     if key.endswith(("decoder.layers.0", "decoder.layers.1", "core_attention"))]
            curves[name] = [trainer.train_step()["loss/total(nats)"]]
            for hook in hooks:
                hook.remove()
            curves[name] += [trainer.train_step()["loss/total(nats)"] for _ in range(2)]
            counts[name] = {key.split("decoder.")[1]: n // trainer.num_microbatches for key, n in calls.items()}
    once = {"layers.0": 1, "layers.1": 1, "layers.0.self_attention.core_attention": 1,
            "layers.1.self_attention.core_attention": 1}
    assert counts["none"] == once
    assert counts["full"] == {key: 2 for key in once}  # every layer rerun, attention inside it too
    assert counts["full-1"] == {**once, "layers.0": 2, "layers.0.self_attention.core_attention": 2}
    assert counts["selective"] == {**once, "layers.0.self_attention.core_attention": 2,
                                   "layers.1.self_attention.core_attention": 2}
    for name in variants:
        assert curves[name] == pytest.approx(curves["none"], rel=1e-6), name


@cpu_only
def test_trainer_context_owns_setup_teardown_and_the_cpu_accommodations(tmp_path, srp_prefix):
    """Entering builds the run inside the CPU accommodations (one function mode, held until exit); exiting, or
    an error while building, leaves no process group and no mode behind."""
    import torch.distributed as dist

    from srp_megatron.train.trainer import Trainer

    def modes() -> int:
        return torch._C._len_torch_function_stack()

    base = [f"logging.run_dir={tmp_path / 'run'}", *RUN, "logging.tensorboard=false", "training.eval_interval=0"]
    before = modes()
    with Trainer(load_pretrain_config("tiny-cpu", [f"data.paths=[{srp_prefix}]", *base])) as trainer:
        assert dist.is_initialized() and modes() == before + 1
        trainer.train_step()
        assert modes() == before + 1
    assert not dist.is_initialized() and modes() == before
    missing = load_pretrain_config("tiny-cpu", [f"data.paths=[{tmp_path / 'missing'}]", *base])
    with pytest.raises(SRPError, match="missing.json' not found"), Trainer(missing):
        pass
    assert not dist.is_initialized() and modes() == before
