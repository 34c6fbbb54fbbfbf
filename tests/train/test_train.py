"""Training: config files, schedule, sampler, checkpoints, the loop, exact resume after SIGKILL."""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers_train import FROZEN_MODEL, make_tiny_data, tiny_config, train_command, train_env

from cagcl_mini.cli.main import main as cli_main
from cagcl_mini.nn import text_cache
from cagcl_mini.nn.text import TextEncoder
from cagcl_mini.nn.text_cache import (
    attach_prefix_cache,
    bucket_by_length,
    clear_shared_prefix_states,
    length_buckets,
)
from cagcl_mini.train import checkpoint as ckpt
from cagcl_mini.train import loop as train_mod
from cagcl_mini.train import step as step_mod
from cagcl_mini.train.batches import GlobalBatchSampler, augment_texts
from cagcl_mini.train.config import PRESETS, TrainConfig, preset, resolve_config
from cagcl_mini.train.distributed import DistInfo
from cagcl_mini.train.log import read_log
from cagcl_mini.train.loop import ensure_trained, fit, training_log
from cagcl_mini.train.setup import load_model, lr_factor


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("tiny_phantom"))


# ----------------------------------------------------------------------------- config
def test_presets_differ_and_cpu_quick_is_the_default():
    assert TrainConfig() == preset("cpu-quick")
    gpu = preset("gpu-full")
    assert gpu.model["vision"] == "resnet18" and gpu.image_size > TrainConfig().image_size
    assert gpu.steps > TrainConfig().steps and gpu.batch_size > TrainConfig().batch_size
    assert set(PRESETS) == {"cpu-quick", "gpu-full"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_yaml_round_trip(tmp_path, name):
    config = preset(name, loss_preset={"local": 1.0, "global": 0.5}, clip_grad=None)
    path = config.save_yaml(tmp_path / "run.yaml")
    loaded = TrainConfig.load_yaml(path)
    assert loaded == config
    assert loaded.fingerprint() == config.fingerprint()
    assert yaml.safe_load(path.read_text())["loss_preset"] == {"local": 1.0, "global": 0.5}


def test_unknown_yaml_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: 3\nstepz: 4\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*'stepz'"):
        TrainConfig.load_yaml(path)
    path.write_text("model:\n  embed_dimm: 4\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*'model\.embed_dimm'"):
        TrainConfig.load_yaml(path)


def test_invalid_values_and_missing_config_are_errors(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="log_format"):
        TrainConfig(log_format="xml")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        resolve_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(KeyError, match="unknown training preset"):
        preset("tpu-huge")


def test_overrides_parse_yaml_values():
    config = TrainConfig().with_overrides(
        ["steps=7", "model.embed_dim=32", "loss_preset=fvlm", "clip_grad=null", "lr=3e-4"]
    )
    assert (config.steps, config.model["embed_dim"], config.loss_preset) == (7, 32, "fvlm")
    assert config.clip_grad is None and config.lr == pytest.approx(3e-4)
    assert not config.use_augment() and preset("cpu-quick").use_augment()
    with pytest.raises(ValueError, match="key=value"):
        TrainConfig().with_overrides(["steps"])


def test_fingerprint_ignores_bookkeeping_only():
    base = TrainConfig()
    assert (
        base.fingerprint() == base.replace(out_dir="/x", num_workers=3, log_every=5).fingerprint()
    )
    assert base.fingerprint() != base.replace(seed=1).fingerprint()
    assert base.run_dir() != base.replace(loss_preset="fvlm").run_dir()


# ----------------------------------------------------------------------------- schedule
def test_warmup_then_cosine_schedule():
    warmup, total, floor = 4, 20, 0.1
    values = [lr_factor(s, warmup, total, floor) for s in range(total)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(floor)
    mid = warmup + (total - warmup - 1) / 2  # halfway through the cosine: the mean of 1 and floor
    assert lr_factor(int(mid), warmup, total, floor) > (1 + floor) / 2 > values[int(mid) + 1]
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))
    # what the trainer's LambdaLR gives the optimiser at each step
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total, floor))
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([2.0 * v for v in values])


# ----------------------------------------------------------------------------- sampler
def test_sampler_is_seeded_resumable_and_shards_ranks():
    full = list(GlobalBatchSampler(10, 4, seed=3, start=0, stop=7))
    assert len(full) == 7 and all(len(b) == 4 for b in full)
    # each epoch (2 batches of 4 out of 10) draws distinct items
    assert len(set(full[0] + full[1])) == 8
    assert full[:2] != full[2:4]  # a new permutation each epoch
    assert list(GlobalBatchSampler(10, 4, seed=3, start=0, stop=7)) == full
    assert list(GlobalBatchSampler(10, 4, seed=3, start=5, stop=7)) == full[5:]
    assert list(GlobalBatchSampler(10, 4, seed=4, start=0, stop=7)) != full
    ranks = [
        list(GlobalBatchSampler(10, 4, seed=3, start=0, stop=7, info=DistInfo(r, 2, r)))
        for r in range(2)
    ]
    assert [a + b for a, b in zip(*ranks, strict=True)] == full
    with pytest.raises(ValueError, match="divisible"):
        GlobalBatchSampler(10, 3, seed=0, info=DistInfo(0, 2, 0))
    with pytest.raises(ValueError, match="fewer than batch_size"):
        GlobalBatchSampler(3, 4, seed=0)


def test_augmentation_depends_only_on_seed_step_and_global_position():
    texts = [
        ["A nodule is seen. The lungs are hyperinflated. There is emphysema.", ""],
        ["The heart is enlarged. A small pericardial effusion is present.", "The lungs are clear."],
    ]
    together = augment_texts(texts, seed=0, micro_step=5)
    split = augment_texts(texts[:1], 0, 5, first_index=0) + augment_texts(texts[1:], 0, 5, 1)
    assert together == split
    assert together[0][1] == ""
    steps = {tuple(augment_texts(texts, 0, m)[0]) for m in range(20)}
    assert len(steps) > 1  # it does change the text across steps


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_is_atomic_weights_only_and_restores_rng(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = {"step": 3, "config": TrainConfig().to_dict(), "rng": ckpt.rng_state()}
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    path = ckpt.save_checkpoint(ckpt.step_path(tmp_path, 3), state)
    assert [p.name for p in tmp_path.iterdir()] == ["step_0000003.pt"]  # no temp file left
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == 3 and loaded["config"] == TrainConfig().to_dict()
    ckpt.set_rng_state(ckpt.load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def test_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        ckpt.load_checkpoint(bad)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt.*format"):
        ckpt.load_checkpoint(tmp_path / "foreign.pt")
    for step in (2, 4, 6):
        ckpt.save_checkpoint(ckpt.step_path(tmp_path, step), {"step": step})
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 6]
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.step_path(tmp_path, 6)


# ----------------------------------------------------------------------------- text prefix cache
@pytest.mark.parametrize(
    ("pooling", "train_layers", "absorb_query"),
    [("mean", 2, True), ("cls", 2, True), ("cls", 1, True), ("cls", 1, False)],
)
def test_prefix_cache_gives_the_encoder_outputs_and_gradients(pooling, train_layers, absorb_query):
    enc = TextEncoder(train_layers=train_layers, pooling=pooling, max_length=32).eval()
    long = (
        "Emphysema in both upper lobes, a 12 mm nodule in the right lower lobe and septal lines. "
    )
    texts = [
        "The lungs are clear.",
        long * 2,
        "",
        "There is a 12 mm nodule in the right lung.",
        long,
    ]
    ref = enc(texts)
    ref.pow(2).sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.requires_grad}
    cache = attach_prefix_cache(enc, shared=False)
    cache.absorb_query = absorb_query
    assert cache.split_layer() == enc.num_layers - train_layers
    for _ in range(2):  # miss, then hit
        enc.zero_grad()
        out = enc(texts)
        out.pow(2).sum().backward()
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
        for name, p in enc.named_parameters():
            if p.requires_grad:  # (CLS: the last layer runs for position 0 alone)
                scale = ref_grads[name].abs().max().item() + 1.0  # key.bias: true grad 0
                torch.testing.assert_close(p.grad, ref_grads[name], rtol=0, atol=1e-5 * scale)
    assert cache.stats == {"hits": 5, "misses": 5, "size": 5}
    cache.bucket_growth = None  # one batch padded to its longest: the same outputs
    torch.testing.assert_close(enc(texts), ref, rtol=0, atol=1e-5)
    enc.set_train_layers(0)
    assert cache.split_layer() is None  # frozen: the encoder's own cache takes over


def test_cls_only_layer_equals_the_full_layer_with_dropout_and_padding():
    layer = TextEncoder(train_layers=1, max_length=32).model.encoder.layer[-1].train()
    torch.manual_seed(0)
    hidden = torch.randn(3, 9, layer.attention.self.all_head_size)
    attention = torch.ones(3, 9, dtype=torch.long)
    attention[1, 4:] = 0  # padded positions: no query attends to them
    hidden[1, 4:] = 1e3  # ...whatever they hold
    mask = text_cache._attention_mask(TextEncoder().model, hidden, attention)
    layer.eval()
    full = text_cache._layer_out(layer(hidden, mask))[:, :1]
    for absorb in (True, False):
        torch.testing.assert_close(
            text_cache.cls_only_layer(layer, hidden, attention, absorb), full, rtol=0, atol=1e-4
        )
    layer.train()  # training mode: the output dropouts act, drawn alike by both ways
    layer.attention.self.dropout.p = 0.0  # (attention dropout draws differ between the two)
    outs = []
    for absorb in (True, False):
        torch.manual_seed(1)
        outs.append(text_cache.cls_only_layer(layer, hidden, attention, absorb))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-4)
    assert not torch.allclose(outs[0], full, atol=1e-3)  # dropout did act


def test_cls_only_top_runs_one_padded_batch_per_call(monkeypatch):
    enc = TextEncoder(train_layers=1, pooling="cls", max_length=64).eval()
    cache = attach_prefix_cache(enc, shared=False)
    texts = ["Normal.", "Patchy ground-glass opacities in both lower lobes. " * 3, "Clear lungs."]
    calls = []
    real_top = cache._top
    monkeypatch.setattr(
        cache, "_top", lambda states, split: calls.append(len(states)) or real_top(states, split)
    )
    out = enc(texts)
    assert calls == [3]  # absorbed query: padding is nearly free, so no length groups
    cache.absorb_query = False
    torch.testing.assert_close(enc(texts), out, rtol=0, atol=1e-5)
    assert calls[1:] == [2, 1]  # projected keys: one call per length group, shortest first


def test_length_buckets_group_states_by_token_count():
    lengths = [30, 3, 12, 4, 100, 8, 31]
    buckets = length_buckets([torch.zeros(n, 2) for n in lengths])
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    assert [[lengths[i] for i in b] for b in buckets] == [[3, 4, 8], [12], [30, 31], [100]]
    assert length_buckets([]) == []


def test_frozen_bottom_runs_new_strings_in_length_groups(monkeypatch):
    enc = TextEncoder(train_layers=1, max_length=64).eval()
    cache = attach_prefix_cache(enc, shared=False)
    monkeypatch.setattr(text_cache, "BOTTOM_CHUNK", 2)
    calls: list[list[int]] = []
    real_bottom = cache._bottom

    def counting_bottom(texts, split):
        calls.append([int(enc.tokenize([t])["attention_mask"].sum()) for t in texts])
        return real_bottom(texts, split)

    monkeypatch.setattr(cache, "_bottom", counting_bottom)
    long = "Patchy ground-glass opacities in both lower lobes with septal thickening. "
    texts = ["Normal.", long * 3, "The heart is enlarged.", "Clear lungs.", long, "No effusion."]
    out = enc(texts)
    assert sorted(n for call in calls for n in call) == sorted(
        int(n) for n in enc.tokenize(texts)["attention_mask"].sum(1)
    )  # every new string ran through the frozen bottom once
    assert all(len(call) <= 2 for call in calls)  # BOTTOM_CHUNK
    assert all(max(c) <= cache.bucket_growth * min(c) + 4 for c in calls)  # similar lengths
    assert len(calls) >= 3
    calls.clear()
    torch.testing.assert_close(enc(texts), out)  # hits: no bottom runs, the same outputs
    assert calls == []
    assert bucket_by_length([30, 3, 12]) == [[1], [2], [0]]


def test_encoders_of_one_text_model_share_their_prefix_states():
    clear_shared_prefix_states()
    texts = ["The lungs are clear.", "The heart is enlarged."]
    first, second = (TextEncoder(train_layers=1, max_length=32).eval() for _ in range(2))
    a, b = attach_prefix_cache(first), attach_prefix_cache(second)
    first(texts)
    assert a.stats["misses"] == 2
    out = second(texts)  # the frozen bottom is the same pretrained weights: no recomputation
    assert b.stats == {"hits": 2, "misses": 0, "size": 2}
    reference = TextEncoder(train_layers=1, max_length=32).eval()(texts)  # no cache at all
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    other = attach_prefix_cache(TextEncoder(train_layers=1, max_length=16))  # truncates otherwise
    other.encoder(texts)
    assert other.stats["misses"] == 2
    clear_shared_prefix_states()


# ----------------------------------------------------------------------------- the loop
def test_fit_logs_checkpoints_and_loads(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "run", log_format="csv", keep_checkpoints=1)
    result = fit(config)
    rows = read_log(result.log)
    assert result.log.name == "log.csv" and training_log(result.checkpoint) == rows
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["local"] > 0 and r["global"] > 0 for r in rows)
    assert rows[0]["lr"] == pytest.approx(config.lr)  # warmup 1: full lr at the first step
    assert rows[-1]["lr"] < rows[0]["lr"]
    assert all(r["loss"] == pytest.approx(r["local"] + r["global"]) for r in rows)
    # periodic checkpoints pruned to 1 (the last one before the end), plus final.pt
    assert [s for s, _ in ckpt.list_checkpoints(result.out_dir)] == [2]
    raw = torch.load(result.checkpoint, weights_only=True)
    assert raw["step"] == 4 and raw["config"] == config.to_dict()
    keys = set(raw["model"])
    assert any(k.startswith("text_encoder.model.encoder.layer.5.") for k in keys)  # trained
    assert not any(k.startswith("text_encoder.model.embeddings.") for k in keys)  # frozen: left out
    model, loaded_config = load_model(result.checkpoint)
    assert loaded_config == config and not model.training
    state = model.state_dict()
    for key, value in raw["model"].items():
        assert torch.equal(state[key], value), key
    emb = model.encode_text(["The heart is enlarged."])
    assert emb.shape == (1, 32) and torch.isfinite(emb).all()
    assert TrainConfig.load_yaml(result.out_dir / "config.yaml") == config


def test_gpu_full_model_trains_and_reloads_on_cpu(tiny_data, tmp_path):
    """No GPU in CI: the gpu-full network (ResNet-18 trunk, 2 trainable MiniLM layers, its
    optimiser settings) shrunk to 32^3 and 2 steps, so the preset is at least run end to end."""
    gpu = preset("gpu-full")
    config = tiny_config(
        tiny_data, tmp_path / "gpu", model=dict(gpu.model), lr=gpu.lr, text_lr=gpu.text_lr,
        steps=2, batch_size=2, checkpoint_every=0, num_workers=0,
    )  # fmt: skip
    result = fit(config)
    rows = read_log(result.log)
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    raw = torch.load(result.checkpoint, weights_only=True)
    assert any(k.startswith("vision.stages.") for k in raw["model"])  # the ResNet trunk
    assert any(k.startswith("text_encoder.model.encoder.layer.4.") for k in raw["model"])
    model, _ = load_model(result.checkpoint)
    assert model.encode_text(["The heart is enlarged."]).shape == (1, gpu.model["embed_dim"])


def test_non_finite_loss_names_step_and_term(tiny_data, tmp_path, monkeypatch):
    real = step_mod.compute_losses
    calls = {"n": 0}

    def poisoned(weights, inputs, batch=None):
        out = real(weights, inputs, batch)
        calls["n"] += 1
        if calls["n"] == 2:  # the second step
            out["global"] = out["global"] * float("nan")
            out["total"] = out["local"] + out["global"]
        return out

    monkeypatch.setattr(step_mod, "compute_losses", poisoned)
    config = tiny_config(tiny_data, tmp_path / "nan", checkpoint_every=0, model=FROZEN_MODEL)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 2: term 'global' = nan"):
        fit(config)
    assert [r["step"] for r in read_log(tmp_path / "nan" / "log.jsonl")] == [1]


def test_gradient_accumulation_steps_every_n_micro_batches(tiny_data, tmp_path, monkeypatch):
    micro = []
    real_collate = train_mod.collate
    monkeypatch.setattr(
        train_mod, "collate", lambda items: micro.append(len(items)) or real_collate(items)
    )
    config = tiny_config(
        tiny_data, tmp_path / "acc", grad_accum=2, steps=3, checkpoint_every=1, model=FROZEN_MODEL
    )
    result = fit(config, progress=False)
    assert micro == [4] * 6  # 3 optimiser steps x 2 micro-batches of 4
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(result.out_dir))
    assert state["step"] == 2 and state["sampler"]["micro_step"] == 4
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {2}
    assert state["scheduler"]["last_epoch"] == 2
    assert [r["step"] for r in read_log(result.log)] == [1, 2, 3]


def test_ensure_trained_reuses_a_matching_checkpoint(tiny_data, tmp_path, monkeypatch):
    config = tiny_config(tiny_data, None, steps=2, checkpoint_every=0, model=FROZEN_MODEL)
    first = ensure_trained(config)
    assert first.name == "final.pt" and config.run_name() in str(first)
    monkeypatch.setattr(train_mod, "fit", lambda *a, **k: pytest.fail("trained again"))
    assert ensure_trained(config) == first
    with pytest.raises(pytest.fail.Exception):
        ensure_trained(config, seed=1)  # another config: needs training


def test_resume_refuses_another_config(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "r", steps=3, checkpoint_every=1, model=FROZEN_MODEL)
    fit(config)
    (tmp_path / "r" / "final.pt").unlink()
    with pytest.raises(ValueError, match="another config.*'lr'"):
        fit(config.replace(lr=0.5), resume=True)


def test_main_trains_from_a_yaml_with_overrides(tiny_data, tmp_path, capsys):
    config = tiny_config(tiny_data, tmp_path / "cli", model=FROZEN_MODEL)
    yaml_path = config.save_yaml(tmp_path / "tiny.yaml")
    code = cli_main(
        ["train", "--config", str(yaml_path), "--steps", "2", "--set", "loss_preset=fvlm"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and "global" not in summary and summary["local"] > 0
    assert Path(summary["checkpoint"]).is_file()
    assert cli_main(["train", "--config", "gpu-full", "--print-config"]) == 0
    assert "resnet18" in capsys.readouterr().out


@pytest.fixture
def one_thread():
    """Match the training subprocesses (OMP_NUM_THREADS=1) so float sums agree bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_killed_run_resumes_to_the_same_loss_curve(tiny_data, tmp_path, one_thread):
    """SIGKILL a real training process after its step-3 checkpoint, resume it with the CLI's
    --resume, and compare the whole curve with an uninterrupted run of the same config."""
    steps = 8
    common = {"steps": steps, "checkpoint_every": 3, "keep_checkpoints": 3}
    cut_yaml = tiny_config(tiny_data, tmp_path / "cut", **common).save_yaml(tmp_path / "cut.yaml")
    proc = subprocess.Popen(
        train_command(cut_yaml), env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 240
        while not ckpt.step_path(tmp_path / "cut", 3).exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "final.pt").exists()  # it really died part-way
    logged_before = [r["step"] for r in read_log(tmp_path / "cut" / "log.jsonl")]
    assert 3 <= max(logged_before) < steps

    assert cli_main(["train", "--config", str(cut_yaml), "--resume"]) == 0
    reference = fit(tiny_config(tiny_data, tmp_path / "ref", **common))

    ref = read_log(reference.log)
    cut = read_log(tmp_path / "cut" / "log.jsonl")
    assert [r["step"] for r in cut] == list(range(1, steps + 1))  # each step logged once
    for a, b in zip(ref, cut, strict=True):
        for term in ("loss", "local", "global", "lr", "grad_norm"):
            assert b[term] == pytest.approx(a[term], rel=1e-6, abs=1e-7), (a["step"], term)
    ref_model = torch.load(reference.checkpoint, weights_only=True)["model"]
    cut_model = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)["model"]
    for key, value in ref_model.items():
        torch.testing.assert_close(cut_model[key], value, rtol=1e-5, atol=1e-6)


def test_stop_after_then_resume_continues_the_same_curve(tiny_data, tmp_path, one_thread):
    """``fit(stop_after=n)`` leaves a resumable step-n checkpoint (no final.pt); resuming runs the
    remaining steps, and the whole curve equals an uninterrupted run's."""
    common = {"steps": 5, "checkpoint_every": 0, "model": FROZEN_MODEL}
    cut = tiny_config(tiny_data, tmp_path / "cut", **common)
    first = fit(cut, stop_after=2)
    assert first.steps == 2 and first.checkpoint == ckpt.step_path(tmp_path / "cut", 2)
    assert not ckpt.final_path(tmp_path / "cut").exists()
    assert [r["step"] for r in read_log(first.log)] == [1, 2]
    second = fit(cut, resume=True)
    assert second.resumed_from == 2 and second.checkpoint.name == "final.pt"
    reference = fit(tiny_config(tiny_data, tmp_path / "ref", **common))
    resumed, straight = read_log(second.log), read_log(reference.log)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5]
    for a, b in zip(resumed, straight, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["lr"] == b["lr"]
    with pytest.raises(ValueError, match="stop_after"):
        fit(cut, stop_after=0)
