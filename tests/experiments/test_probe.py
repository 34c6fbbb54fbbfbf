"""Supervised probes: the linear probe reads each label from its own anatomy's embedding, the
supervised image tower pools per anatomy and learns on a real (tiny) phantom dataset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers_train import FROZEN_MODEL, tiny_config

from cagcl_mini.anatomy import ALL_LABELS, ANATOMY_ID, ANATOMY_NAMES, CT_RATE_LABELS, NUM_ANATOMIES
from cagcl_mini.bench import probe as probe_bench
from cagcl_mini.evaluation.embed import EmbeddedSplit
from cagcl_mini.experiments import probe
from cagcl_mini.phantom.build import make_dataset
from cagcl_mini.train.setup import dataset_for


def test_every_label_maps_to_its_catalog_anatomy():
    assert len(probe.LABEL_ANATOMY) == len(ALL_LABELS)
    expected = {"Cardiomegaly": "heart", "Lung nodule": "lung", "Hepatic steatosis": "liver"}
    for label, organ in expected.items():
        assert ANATOMY_NAMES[probe.LABEL_ANATOMY[ALL_LABELS.index(label)]] == organ


def _split(n: int, rng: np.random.Generator, signal_slot: dict[str, str]) -> EmbeddedSplit:
    """Random embeddings; label L is positive in half the volumes and shifts anatomy slot[L]."""
    v = rng.normal(size=(n, NUM_ANATOMIES, 16)).astype(np.float32)
    labels = np.zeros((n, len(ALL_LABELS)), dtype=np.float32)
    for label, organ in signal_slot.items():
        y = rng.random(n) < 0.5
        labels[:, ALL_LABELS.index(label)] = y
        v[y, ANATOMY_NAMES.index(organ), 0] += 3.0
    return EmbeddedSplit(
        v=torch.from_numpy(v), present=torch.ones(n, NUM_ANATOMIES, dtype=torch.bool),
        labels=torch.from_numpy(labels), abnormal=torch.zeros(n, NUM_ANATOMIES, dtype=torch.bool),
        ids=[str(i) for i in range(n)], texts=[[""] * NUM_ANATOMIES for _ in range(n)],
    )  # fmt: skip


def test_linear_probe_reads_each_label_from_its_own_anatomy():
    # cardiomegaly shows in the heart slot (readable); the nodule signal sits in the kidney slot,
    # which the probe must not look at
    slots = {"Cardiomegaly": "heart", "Lung nodule": "kidney"}
    rng = np.random.default_rng(0)
    out = probe.linear_probe(_split(200, rng, slots), _split(200, rng, slots))
    assert out["n_labels"] == 2 and set(out["auc"]) == set(slots)
    assert out["auc"]["Cardiomegaly"] > 0.95
    assert abs(out["auc"]["Lung nodule"] - 0.5) < 0.12
    assert out["macro_auc"] == pytest.approx(np.mean(list(out["auc"].values())))


def test_supervised_probe_pools_each_label_over_its_anatomy():
    torch.manual_seed(0)
    net = probe.SupervisedProbe().eval()
    torch.nn.init.normal_(net.weight)
    image = torch.rand(2, 1, 32, 32, 32)
    anatomy = torch.zeros(2, 32, 32, 32, dtype=torch.long)
    anatomy[:, 2:14] = ANATOMY_ID["lung"]
    anatomy[:, 16:24, 8:24] = ANATOMY_ID["heart"]
    no_lung = torch.where(anatomy == ANATOMY_ID["lung"], 0, anatomy)
    with torch.no_grad():
        logits, logits_no_lung = net(image, anatomy), net(image, no_lung)
    assert logits.shape == (2, len(ALL_LABELS)) and torch.isfinite(logits).all()
    heart = [ALL_LABELS.index("Cardiomegaly"), ALL_LABELS.index("Pericardial effusion")]
    lung = ALL_LABELS.index("Lung nodule")
    assert torch.allclose(logits[:, heart], logits_no_lung[:, heart], atol=1e-5)
    assert not torch.allclose(logits[:, lung], logits_no_lung[:, lung])
    assert torch.allclose(logits_no_lung[:, lung], net.bias[lung].expand(2))  # absent: bias only


def test_supervised_probe_trains_its_encoder_from_the_first_step():
    torch.manual_seed(0)
    net = probe.SupervisedProbe().train()
    image = torch.rand(2, 1, 32, 32, 32)
    anatomy = torch.zeros(2, 32, 32, 32, dtype=torch.long)
    anatomy[:, 2:14] = ANATOMY_ID["lung"]
    anatomy[:, 16:24, 8:24] = ANATOMY_ID["heart"]
    labels = torch.zeros(2, len(ALL_LABELS))
    labels[0, ALL_LABELS.index("Cardiomegaly")] = 1.0
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(image, anatomy), labels)
    loss.backward()
    stem = next(p for p in net.vision.parameters() if p.ndim == 5)
    assert stem.grad is not None and stem.grad.abs().sum() > 0, "a zero head starves the encoder"


@pytest.fixture(scope="module")
def probe_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_data") / "phantom"
    return make_dataset(root, n_train=16, n_valid=10, size=32, seed=0, workers=1, progress=False)


def test_supervised_probe_learns_and_scores_the_validation_split(probe_data):
    config = tiny_config(probe_data, None, steps=16, warmup_steps=2, lr=3e-3)
    out = probe.supervised_probe(config, progress=False)
    assert out["kind"] == "supervised" and out["steps"] == 16 and out["image_size"] == 32
    assert out["last_loss"] < out["first_loss"], "BCE should fall on the training split"
    valid = np.stack([item["labels"].numpy() for item in dataset_for(config, "valid")]) > 0.5
    scorable = [ALL_LABELS[a] for a in range(len(ALL_LABELS)) if 0 < valid[:, a].sum() < len(valid)]
    assert set(out["auc"]) == set(scorable) and out["n_labels"] == len(scorable) > 0
    assert all(0.0 <= a <= 1.0 for a in out["auc"].values()) and not math.isnan(out["macro_auc"])


def test_supervised_probe_scores_sites_b_and_c_on_their_18_findings():
    # the embedded phantom (data_root None), tiny: sites A, B and C are built in the test's home
    config = tiny_config(
        "unused", None, n_train=16, n_valid=12, data_size=32, steps=8, warmup_steps=2
    ).replace(data_root=None)
    out = probe.supervised_probe(config, progress=False, sites=("B", "C"))
    assert set(out["site_b_auc"]) <= set(CT_RATE_LABELS) and out["site_b_auc"]
    assert 0.0 <= out["site_b_macro_auc"] <= 1.0
    a = np.mean([out["auc"][k] for k in CT_RATE_LABELS if k in out["auc"]])
    b = np.mean(list(out["site_b_auc"].values()))
    assert out["site_b_minus_a"] == pytest.approx(b - a)
    c = np.mean(list(out["site_c_auc"].values()))
    assert set(out["site_c_auc"]) <= set(CT_RATE_LABELS) and out["site_c_minus_a"] == pytest.approx(
        c - a
    )
    assert out["site_c_auc"] != out["site_b_auc"], "another hospital, other volumes"


def _volume(lung_value: float, heart_edge: int, labels: dict[str, int]) -> dict:
    image = np.full((1, 12, 12, 12), 0.5, dtype=np.float32)
    amap = np.zeros((12, 12, 12), dtype=np.int64)
    amap[:6] = ANATOMY_ID["lung"]
    image[0, :6] = lung_value
    amap[8 : 8 + heart_edge, :heart_edge, :heart_edge] = ANATOMY_ID["heart"]
    y = np.zeros(len(ALL_LABELS), dtype=np.float32)
    for name, value in labels.items():
        y[ALL_LABELS.index(name)] = value
    return {"image": torch.from_numpy(image), "anatomy": torch.from_numpy(amap), "labels": y}


def test_intensity_probe_finds_the_statistic_that_shows_each_finding():
    rng = np.random.default_rng(0)
    volumes = []
    for i in range(24):
        emphysema, big_heart = i % 2, (i // 2) % 2
        lung = 0.07 - 0.04 * emphysema + 0.005 * rng.random()
        volumes.append(
            _volume(
                lung, 4 if big_heart else 3, {"Emphysema": emphysema, "Cardiomegaly": big_heart}
            )
        )
    out = probe.intensity_probe([volumes[:12], volumes[12:]])
    assert out["n_volumes"] == 24 and out["n_labels"] == 2
    assert out["auc"] == {"Emphysema": 1.0, "Cardiomegaly": 1.0}
    assert out["statistic"]["Emphysema"] in {"mean", "p1", "p99"}
    assert out["statistic"]["Cardiomegaly"] == "voxels"
    assert (
        probe.anatomy_statistics(volumes[0]["image"].numpy()[0], volumes[0]["anatomy"].numpy(), 5)
        == [0.0] * 5
    )


def test_benchmark_puts_zero_shot_next_to_every_probe(probe_data):
    config = tiny_config(probe_data, None, steps=4, warmup_steps=2, model=FROZEN_MODEL)
    out = probe_bench.benchmark(config, steps=3, supervised_seeds=2)
    assert out["steps"] == 3 and out["image_size"] == 32
    assert set(out["models"]) == {"untrained", "fvlm", "ctglip", "cagcl"}
    for row in out["models"].values():
        assert 0.0 <= row["zero_shot_macro_auc"] <= 1.0
        assert row["linear_probe"]["kind"] == "linear" and row["linear_probe"]["n_labels"] > 0
    assert out["supervised"]["steps"] == 3 and out["intensity"]["n_volumes"] == 26
    # the same labels are scored by every probe
    assert set(out["supervised"]["auc"]) == set(out["models"]["cagcl"]["linear_probe"]["auc"])
    spread = out["supervised_seeds"]
    assert spread["seeds"] == [0, 1] and spread["macro_auc"][0] == out["supervised"]["macro_auc"]
    assert spread["macro_auc_mean"] == pytest.approx(np.mean(spread["macro_auc"]))
    low, high = spread["macro_auc_ci95"]
    assert low <= spread["macro_auc_mean"] <= high
    assert set(spread["auc_mean"]) == set(out["supervised"]["auc"])
    assert all(spread["auc_min"][n] <= spread["auc_mean"][n] for n in spread["auc_mean"])


def test_supervised_only_changes_the_config_and_skips_the_presets(probe_data, monkeypatch, capsys):
    from cagcl_mini.cli.main import main as cli_main

    config = tiny_config(probe_data, None, steps=4, warmup_steps=2, model=FROZEN_MODEL)
    monkeypatch.setattr(
        probe_bench, "trained_model", lambda *a, **k: pytest.fail("a preset was trained")
    )
    out = probe_bench.benchmark(
        config, supervised_seeds=2, overrides=["batch_size=2", "lr=0.01"], supervised_only=True
    )
    assert "models" not in out and "intensity" not in out
    assert out["batch_size"] == 2 and out["lr"] == 0.01 and out["steps"] == 4
    assert out["overrides"] == ["batch_size=2", "lr=0.01"]
    assert (
        out["supervised_seeds"]["seeds"] == [0, 1] and "site_b_macro_auc" not in out["supervised"]
    )
    # a mistyped field fails in one line before any training, naming it
    assert cli_main(["bench", "probe", "--supervised-only", "--set", "batch_sise=2"]) == 2
    assert "unknown key 'batch_sise'" in capsys.readouterr().err


def test_supervised_spread_summarises_seeds():
    runs = [
        {"seed": 0, "macro_auc": 0.8, "auc": {"a": 0.9, "b": 0.7}},
        {"seed": 1, "macro_auc": 0.7, "auc": {"a": 0.8, "b": 0.6}},
        {"seed": 2, "macro_auc": 0.9, "auc": {"a": 0.7, "b": 0.9}},
    ]
    out = probe_bench.supervised_spread(runs)
    assert out["macro_auc_mean"] == pytest.approx(0.8)
    assert out["auc_mean"] == pytest.approx({"a": 0.8, "b": 0.7333333})
    assert out["auc_min"] == {"a": 0.7, "b": 0.6}
    assert out["findings_mean_at_least_0.75"] == 1 and out["findings"] == 2
    low, high = out["macro_auc_ci95"]
    assert low < 0.8 < high and high - low == pytest.approx(2 * 4.302653 * 0.1 / 3**0.5, rel=1e-4)
    with pytest.raises(ValueError, match="supervised_seeds must be >= 1"):
        probe_bench.benchmark("cpu-quick", supervised_seeds=0)


def test_supervised_probe_names_a_split_smaller_than_a_batch(probe_data):
    config = tiny_config(probe_data, None, batch_size=64)
    with pytest.raises(ValueError, match="16 volumes, fewer than one batch of 64"):
        probe.supervised_probe(config, progress=False)
