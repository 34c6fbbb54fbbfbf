"""One training step reads batch -> model -> losses: the model's forward returns the losses' inputs
by name, and ``fit`` and ``bench train`` take the very same step."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from helpers_train import FROZEN_MODEL, make_tiny_data, tiny_config

from cagcl_mini.anatomy import ANATOMY_NAMES, prompt_pair
from cagcl_mini.bench import train as train_bench
from cagcl_mini.data.dataset import collate
from cagcl_mini.losses.objective import (
    DIFFERENTIABLE_KEYS,
    INPUT_KEYS,
    PER_SAMPLE_KEYS,
    compute_losses,
)
from cagcl_mini.train import setup
from cagcl_mini.train.batches import DiagnosisDictionary, GlobalBatchSampler
from cagcl_mini.train.log import read_log
from cagcl_mini.train.loop import fit
from cagcl_mini.train.setup import dataset_for, model_for
from cagcl_mini.train.step import Objective, check_finite, step_losses


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("step_data"))


def _first_batch(config):
    dataset = dataset_for(config, "train")
    sampler = GlobalBatchSampler(len(dataset), config.batch_size, config.seed)
    return collate([dataset[i] for i in sampler.global_batch(0)])


def test_forward_returns_loss_inputs_by_their_names(tiny_data):
    config = tiny_config(tiny_data, None, model=FROZEN_MODEL, loss_preset="ctglip")
    batch = _first_batch(config)
    batch["texts"][0][1] = ""  # a present heart left undescribed
    model = model_for(config, for_training=True)
    objective = Objective.of(config)
    out = model(batch, dictionary=objective.dictionary.sentences, with_prompts=True)
    assert set(out) <= set(INPUT_KEYS)
    assert set(out) == {
        "v",
        "t",
        "present",
        "logit_scale",
        "logit_bias",
        "dictionary",
        "anatomy_text",
    }
    assert PER_SAMPLE_KEYS <= set(INPUT_KEYS) and DIFFERENTIABLE_KEYS <= PER_SAMPLE_KEYS
    assert batch["present"][0, 1] and not out["present"][0, 1]  # present = in volume and described
    assert not (out["present"] & ~batch["present"]).any()  # never present where the volume lacks it
    losses = compute_losses(
        config.loss_weights(),
        {**out, "abnormal": batch["abnormal"], "texts": batch["texts"],
         "dictionary_anatomy": objective.dictionary.anatomy_index()},
    )  # fmt: skip
    assert set(losses) == {"anatomy", "diagnosis", "total"}
    assert all(math.isfinite(float(v.detach())) for v in losses.values())


def test_fit_and_the_benchmark_take_the_same_step(tiny_data, tmp_path):
    config = tiny_config(
        tiny_data, tmp_path / "one", steps=1, checkpoint_every=0, model=FROZEN_MODEL,
        loss_preset="cagcl",
    )  # fmt: skip
    logged = read_log(fit(config).log)[0]
    model = model_for(config, for_training=True)
    losses = step_losses(model, _first_batch(config), Objective.of(config), micro_step=0)
    for term in ("local", "global"):
        assert float(losses[term].detach()) == pytest.approx(logged[term], abs=1e-5), term
    assert float(losses["total"].detach()) == pytest.approx(logged["loss"], abs=1e-5)
    times = train_bench.step_times(config.replace(loss_preset="fvlm"), cached=True, steps=2)
    times += train_bench.step_times(config, cached=True, steps=1, length_buckets=False)
    times += train_bench.step_times(config, cached=True, steps=1, absorb_query=False)
    assert len(times) == 4 and all(t > 0 for t in times)


def test_dictionary_fraction_keeps_a_seeded_share_of_each_anatomy():
    full = DiagnosisDictionary.build()
    half = DiagnosisDictionary.build(fraction=0.5, seed=1)
    for name in ANATOMY_NAMES:
        own = [e for e in full.entries if e.anatomy == name]
        kept = [e for e in half.entries if e.anatomy == name]
        assert len(kept) == round(0.5 * len(own)) and set(kept) <= set(own)
    assert half != DiagnosisDictionary.build(fraction=0.5, seed=2)  # the seed draws the subset
    assert len(DiagnosisDictionary.build(fraction=0.0)) == 0
    with pytest.raises(ValueError, match="fraction"):
        DiagnosisDictionary.build(fraction=1.5)


def test_objective_builds_the_dictionary_share_and_the_disease_prompts(tiny_data):
    base = tiny_config(tiny_data, None, model=FROZEN_MODEL, loss_preset="ctglip")
    assert len(Objective.of(base).dictionary) == len(DiagnosisDictionary.build())
    quarter = Objective.of(base.replace(dictionary_fraction=0.25)).dictionary
    assert 0 < len(quarter) < len(DiagnosisDictionary.build()) / 3
    assert Objective.of(base.replace(dictionary_fraction=0.0)).dictionary is None
    assert base.replace(dictionary_fraction=0.25).run_name() != base.run_name()
    assert base.replace(dictionary_fraction=1.0).run_name() == base.run_name()

    config = base.replace(loss_preset={"local": 1.0, "disease": 1.0})
    objective = Objective.of(config)
    assert objective.disease is not None and objective.dictionary is None
    batch = _first_batch(config)
    losses = step_losses(model_for(config, for_training=True), batch, objective)
    assert set(losses) == {"local", "disease", "total"}
    prompts = objective.disease
    labels = prompts.labels(batch["labels"])
    assert labels.shape == (len(batch["id"]), len(prompts.abnormalities))
    assert prompts.prompts[:2] == list(prompt_pair(prompts.abnormalities[0], "fvlm"))
    losses["disease"].backward()  # reaches the vision tower through the prompt scores
    with pytest.raises(ValueError, match="labels"):
        prompts.labels(batch["labels"][:, :3])


def test_a_non_finite_term_names_the_step_term_and_volumes():
    losses = {"local": torch.tensor(0.5), "global": torch.tensor(float("inf"))}
    losses["total"] = losses["local"] + losses["global"]
    with pytest.raises(FloatingPointError, match=r"step 7: term 'global' = inf \(volumes a, b\)"):
        check_finite(losses, 7, ["a", "b"])


def test_prefix_fill_benchmark_times_a_cold_store(tiny_data, tmp_path):
    config = tiny_config(
        tiny_data, tmp_path / "fill", model={**FROZEN_MODEL, "text_train_layers": 1}
    )
    grouped = train_bench.prefix_fill_seconds(config, True, volumes=4)
    padded = train_bench.prefix_fill_seconds(config, False, volumes=4)
    assert grouped > 0 and padded > 0
    with pytest.raises(ValueError, match="needs the frozen-prefix cache"):
        train_bench.prefix_fill_seconds(config.replace(text_prefix_cache=False), True, volumes=4)


@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")
@pytest.mark.parametrize(
    ("device", "amp", "cpu_bf16", "native", "expected"),
    [
        ("cpu", True, True, True, torch.bfloat16),
        ("cpu", True, True, False, None),  # emulated bf16 is slower than float32
        ("cpu", True, False, True, None),
        ("cuda", True, False, False, torch.bfloat16),
        ("cuda", False, True, True, None),
    ],
)
def test_the_forward_autocasts_to_bf16_only_where_it_pays(
    monkeypatch, tiny_data, device, amp, cpu_bf16, native, expected
):
    monkeypatch.setattr(setup, "native_cpu_bf16", lambda: native)
    config = tiny_config(tiny_data, None, amp=amp, cpu_bf16=cpu_bf16)
    context = setup.autocast_for(config, torch.device(device))()
    if expected is None:
        assert isinstance(context, contextlib.nullcontext)
    else:
        assert isinstance(context, torch.autocast)
        assert context.device == device and context.fast_dtype == expected


def test_a_bf16_forward_on_cpu_keeps_the_losses_and_their_gradients(monkeypatch, tiny_data):
    monkeypatch.setattr(setup, "native_cpu_bf16", lambda: True)  # emulated where not native
    config = tiny_config(tiny_data, None, model=FROZEN_MODEL, loss_preset="cagcl", cpu_bf16=True)
    batch, objective = _first_batch(config), Objective.of(config)
    results = {}
    for name, autocast in (
        ("fp32", contextlib.nullcontext),
        ("bf16", setup.autocast_for(config, torch.device("cpu"))),
    ):
        model = model_for(config, for_training=True)
        losses = step_losses(model, batch, objective, micro_step=0, autocast=autocast)
        losses["total"].backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[name] = ({k: float(v.detach()) for k, v in losses.items()}, grads)
    (fp32, fp32_grads), (bf16, bf16_grads) = results["fp32"], results["bf16"]
    assert set(fp32) == set(bf16)
    for term, value in fp32.items():
        assert bf16[term] == pytest.approx(value, rel=0.02, abs=0.01), term
    assert any(fp32[t] != bf16[t] for t in fp32)  # the bf16 forward did run
    assert torch.isfinite(bf16_grads).all()
    assert F.cosine_similarity(fp32_grads, bf16_grads, dim=0) > 0.99


def test_image_augmentation_changes_the_step_and_repeats_with_the_seed(tiny_data, tmp_path):
    config = tiny_config(
        tiny_data, None, steps=2, checkpoint_every=0, model=FROZEN_MODEL, loss_preset="cagcl"
    )
    losses = {}
    for name, augment in (("plain", False), ("augmented", True), ("again", True)):
        run = config.replace(image_augment=augment, out_dir=str(tmp_path / name))
        losses[name] = [row["loss"] for row in read_log(fit(run).log)]
    assert all(math.isfinite(v) for v in losses["augmented"])
    assert losses["augmented"] != losses["plain"]
    assert losses["augmented"] == pytest.approx(losses["again"], abs=1e-6)
    assert config.replace(image_augment=True).run_name() != config.run_name()
