"""Segmentation transfer on a real (tiny) phantom: masks on the loader's grid, Dice and its empty
rule, the pretrained weights reaching the fine-tune, the experiment's tables and the bench command
as a process."""

from __future__ import annotations

import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers_train import FROZEN_MODEL, REPO, tiny_config, train_env

from cagcl_mini.anatomy import ANATOMY_ID
from cagcl_mini.bench import segmentation as seg_bench
from cagcl_mini.errors import DataError
from cagcl_mini.experiments import segmentation as seg
from cagcl_mini.phantom.build import make_dataset
from cagcl_mini.train.loop import trained_model
from cagcl_mini.train.setup import dataset_for


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_data") / "phantom"
    return make_dataset(root, n_train=24, n_valid=16, size=32, seed=0, workers=1, progress=False)


@pytest.fixture(scope="module")
def config(seg_data):
    return tiny_config(seg_data, None, steps=2, warmup_steps=1, model=FROZEN_MODEL)


def test_effusion_masks_sit_in_the_lung_of_the_loaded_anatomy_map(config):
    train = seg.FindingMasks(dataset_for(config, "train"), "effusion")
    positives = train.positives()
    assert len(positives) >= 3, "the fixture must hold a few effusions"
    for i in positives:
        mask = train.mask(i)
        assert mask.shape == (1, 32, 32, 32) and mask.dtype == torch.uint8
        anatomy = train.dataset.load_volume(i)["anatomy"]
        inside = (anatomy[mask[0].bool()] == ANATOMY_ID["lung"]).float().mean()
        assert inside > 0.9, f"volume {i}: only {inside:.2f} of the effusion lies in lung"
    # the labels CSV and the masks agree: unmarked volumes have empty masks
    assert all(not train.mask(i).any() for i in train.empties(4))


def test_a_missing_mask_file_is_named(config, tmp_path):
    data = tmp_path / "copy"
    shutil.copytree(config.data_root, data)
    dataset = dataset_for(config.replace(data_root=str(data)), "train")
    masks = seg.FindingMasks(dataset, "effusion")
    masks.path(0).unlink()
    with pytest.raises(FileNotFoundError, match="finding mask .*train_.* is missing") as e:
        masks.mask(0)
    assert "real CT-RATE data has none" in str(e.value) and str(masks.path(0)) in str(e.value)


def test_a_mask_of_another_shape_than_its_ct_is_refused(config, tmp_path):
    data = tmp_path / "copy"
    shutil.copytree(config.data_root, data)
    masks = seg.FindingMasks(dataset_for(config.replace(data_root=str(data)), "train"), "lesion")
    path = masks.path(1)
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 20), np.uint8), nib.load(path).affine), path)
    with pytest.raises(DataError, match=r"has shape \(32, 32, 20\), its CT .* has \(32, 32, 32\)"):
        masks.mask(1)


def test_an_unmasked_finding_is_refused_by_name(config):
    with pytest.raises(ValueError, match="finding 'emphysema' has no mask"):
        seg.FindingMasks(dataset_for(config, "train"), "emphysema")


def test_dice_is_one_for_a_perfect_and_zero_for_an_empty_prediction():
    truth = torch.zeros(3, 1, 8, 8, 8, dtype=torch.long)
    truth[0, 0, 2:5, 2:5, 2:5] = 1
    truth[1, 0, 1:3] = 1  # truth[2] is a finding-free volume
    assert seg.volume_dice(truth, truth).tolist() == [1.0, 1.0, 1.0]  # empty+empty counts as 1
    empty = torch.zeros_like(truth)
    assert seg.volume_dice(empty, truth).tolist() == [0.0, 0.0, 1.0]
    stray = empty.clone()
    stray[2, 0, 0, 0, 0] = 1  # one predicted voxel in a finding-free volume
    assert seg.volume_dice(stray, truth)[2].item() == 0.0
    half = truth.clone()
    half[0, 0, 2:5, 2:5, 2] = 0  # 18 of 27 voxels found
    assert seg.volume_dice(half, truth)[0].item() == pytest.approx(2 * 18 / (18 + 27))


def test_a_few_steps_on_the_tiny_phantom_reduce_the_dice_ce_loss(config):
    train = seg.FindingMasks(dataset_for(config, "train"), "effusion")
    net = seg.segmentation_model("scratch", config, seed=0)
    losses = seg.fine_tune(net, train, train.positives(1), steps=8, batch_size=1, patch=None)
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.02, losses


def test_the_fine_tune_starts_from_the_pretrained_encoder_weights(config):
    pretrained = trained_model(config, loss_preset="cagcl", progress=False).vision
    net = seg.segmentation_model("cagcl", config, seed=3)
    name = "layers.1.conv.unit0.conv.weight"
    weight = dict(net.encoder.named_parameters())[name]
    assert torch.equal(weight, dict(pretrained.named_parameters())[name])
    assert weight is not dict(pretrained.named_parameters())[name], "the fine-tune owns a copy"
    scratch = seg.segmentation_model("scratch", config, seed=3)
    assert not torch.equal(dict(scratch.encoder.named_parameters())[name], weight)
    again = seg.segmentation_model("scratch", config, seed=3)
    assert torch.equal(dict(again.named_parameters())["head.conv.conv.weight"],
                       dict(scratch.named_parameters())["head.conv.conv.weight"])  # fmt: skip


def test_the_transfer_tables_hold_every_encoder_size_and_seed(config):
    setting = seg.TransferSetting(steps=2, batch_size=2, patch=16, max_valid=3, n_empty=2)
    out = seg.run_transfer(config, "effusion", ("scratch", "cagcl"), (1, 2), (0, 1), setting)
    assert out["finding"] == "Pleural effusion" and out["steps"] == 2
    shown = seg.FindingMasks(dataset_for(config, "valid"), "effusion").positives(3)
    assert len(out["runs"]) == 2 * 2 * 2 and out["n_valid"] == len(shown) >= 1
    assert out["n_empty"] == 2
    for encoder in ("scratch", "cagcl"):
        for n in (1, 2):
            cell = out["dice"][encoder][n]
            assert len(cell["per_seed"]) == 2 and all(0.0 <= v <= 1.0 for v in cell["per_seed"])
            assert cell["mean"] == pytest.approx(np.mean(cell["per_seed"]))
            assert len(cell["ci95"]) == 2
    gain = out["gain_vs_scratch"]["cagcl"][2]["per_seed"]
    assert gain == pytest.approx(
        [a - b for a, b in zip(out["dice"]["cagcl"][2]["per_seed"],
                               out["dice"]["scratch"][2]["per_seed"], strict=True)]
    )  # fmt: skip


def test_more_labelled_volumes_than_the_data_shows_is_named(config):
    with pytest.raises(ValueError, match=r"500 labelled volumes asked, but only \d+ training"):
        seg.run_transfer(config, "effusion", ("scratch",), (500,), (0,))


def test_benchmark_flattens_the_tables_for_json(config):
    out = seg_bench.benchmark(config, n_labelled=(1,), seeds=2, steps=1, encoders=("scratch",))
    row = out["dice"]["scratch"]
    assert set(row) == {"1", "1_ci95", "1_per_seed"} and len(row["1_per_seed"]) == 2
    assert out["finding"] == "Pleural effusion" and out["steps"] == 1 and out["seconds"] > 0
    json.dumps(out)  # plain JSON types only


def test_bench_segmentation_prints_one_json_object_last(config, tmp_path):
    cfg = config.replace(data_cache="disk")
    path = cfg.save_yaml(tmp_path / "tiny.yaml")
    cmd = [str(REPO / ".venv" / "bin" / "cagcl-mini"), "bench", "segmentation", "--json",
           "--config", str(path), "--seeds", "2", "--steps", "1", "--labelled", "1", "2"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=train_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["dice"]) == {"scratch", "fvlm", "cagcl"}
    for row in result["dice"].values():
        assert set(row) == {"1", "1_ci95", "2", "2_ci95", "1_per_seed", "2_per_seed"}
        assert len(row["2_per_seed"]) == 2 and len(row["2_ci95"]) == 2
    assert set(result["gain_vs_scratch"]) == {"fvlm", "cagcl"}
    assert result["steps"] == 1 and result["finding"] == "Pleural effusion"
    assert result["seconds"] > 0 and result["n_labelled"] == [1, 2]


def test_bench_segmentation_names_a_bad_finding(config, tmp_path):
    path = config.save_yaml(tmp_path / "tiny.yaml")
    cmd = [str(REPO / ".venv" / "bin" / "cagcl-mini"), "bench", "segmentation", "--json",
           "--config", str(path), "--finding", "emphysema"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=train_env(), timeout=900)
    assert done.returncode != 0
    assert "cagcl-mini bench: error: finding 'emphysema' has no mask" in done.stderr
