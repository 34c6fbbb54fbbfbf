"""Snippet localisation end to end on a tiny phantom set, and the miner's geometry on fixtures."""

from __future__ import annotations

import json
import subprocess

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from helpers_train import FROZEN_MODEL, REPO, tiny_config, train_env
from layout_fixtures import FixtureVolume, write_layout

from cagcl_mini import layout
from cagcl_mini.data.citations import axial_position, mine_pairs
from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.experiments.localisation import TERM_PRESET, pretraining_config, run_localisation
from cagcl_mini.phantom.build import make_dataset
from cagcl_mini.text.citations import mine_citations
from cagcl_mini.viz.localisation import plot_localisation

CLI = REPO / ".venv" / "bin" / "cagcl-mini"
PRESETS = ("fvlm", "ctglip", "cagcl")


@pytest.fixture(scope="module")
def cited_data(tmp_path_factory):
    return make_dataset(
        tmp_path_factory.mktemp("loc") / "ds",
        n_train=16, n_valid=8, size=32, seed=0, workers=1, progress=False,
    )  # fmt: skip


def _truth(root, split):
    """Targets and extents of a split's pairs, from the CSVs and the NIfTI files alone."""
    reports = pd.read_csv(layout.csv_path(root, "reports", split), index_col="VolumeName")
    meta = pd.read_csv(layout.csv_path(root, "metadata", split), index_col="VolumeName")
    targets, extents = [], []
    for name, text in reports["Findings_EN"].items():
        for pair in mine_citations(text):
            z = nib.load(layout.ct_path(root, name)).shape[2]
            targets.append((pair.image - 0.5) / z)  # phantom: RAS+, axis 2 superior
            extents.append(z * float(meta.loc[name, "ZSpacing"]))
    return np.array(targets), np.array(extents)


def test_run_localisation_end_to_end(cited_data):
    config = tiny_config(cited_data, None, steps=2, checkpoint_every=0, model=dict(FROZEN_MODEL))
    out = run_localisation(config, PRESETS[:2], head_steps=40, n_bootstrap=50, examples=2)
    train_t, _ = _truth(cited_data, "train")
    valid_t, valid_mm = _truth(cited_data, "valid")
    assert out["n_train_pairs"] == len(train_t) > 0 and out["n_valid_pairs"] == len(valid_t) > 0
    mean_mm = float(np.mean(np.abs(train_t.mean() - valid_t) * valid_mm))
    assert out["baselines"]["dataset_mean"]["mae_mm"] == pytest.approx(mean_mm)
    rows = [out[p] for p in PRESETS[:2]] + list(out["baselines"].values())
    for row in rows:
        lo, hi = row["mae_mm_ci95"]
        assert 0 <= lo <= row["mae_mm"] <= hi <= valid_mm.max(), row
    for preset in PRESETS[:2]:
        assert out[preset]["head_loss_last"] < out[preset]["head_loss_first"]
        # the paired difference against the anatomy centroid, pair by pair
        diff = out[preset]["mae_mm"] - out["baselines"]["anatomy_centroid"]["mae_mm"]
        assert out[preset]["minus_centroid_mm"] == pytest.approx(diff)
        lo, hi = out[preset]["minus_centroid_mm_ci95"]
        assert lo <= out[preset]["minus_centroid_mm"] <= hi
    assert out["baselines"]["anatomy_centroid"]["n_fallback"] == 0  # every snippet routes
    examples = out["examples"]
    assert len(examples) == 2 and examples[0]["coronal"].shape == (32, 32)
    assert set(examples[0]["predicted"]) == set(PRESETS[:2])
    fig = plot_localisation(out)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 1 + 2 + 1  # truth, presets, centroid
    assert examples[0]["snippet"][:20] in fig.axes[0].get_title().replace("\n", " ")
    assert fig._repr_png_()[:4] == b"\x89PNG"
    with pytest.raises(KeyError, match="run_localisation\\(..., examples=4\\)"):
        plot_localisation({"fvlm": {}})


def test_pretraining_with_the_localisation_term_is_scored_both_ways(cited_data):
    config = tiny_config(cited_data, None, steps=2, checkpoint_every=0, model=dict(FROZEN_MODEL))
    out = run_localisation(config, ("fvlm", TERM_PRESET), head_steps=20, n_bootstrap=50)
    row = out[TERM_PRESET]
    for scored in (row, row["own_head"]):
        lo, hi = scored["mae_mm_ci95"]
        assert 0 <= lo <= scored["mae_mm"] <= hi
    assert "own_head" not in out["fvlm"]  # no head of its own
    trained = pretraining_config(config, TERM_PRESET, 0.5)
    assert trained.loss_weights() == {"local": 1.0, "global": 1.0, "localisation": 0.5}
    assert trained.use_augment() and trained.model_config().localisation_head
    with pytest.raises(ValueError, match="weight must be > 0"):
        pretraining_config(config, TERM_PRESET, 0.0)


def _fixture(report: str, affine=None) -> FixtureVolume:
    ct = np.full((16, 16, 20), -1000, np.int16)
    ct[4:12, 4:12, :] = 40
    seg = np.zeros(ct.shape, np.uint8)
    seg[4:12, 4:12, 2:18] = 10  # lung
    return FixtureVolume(ct=ct, seg=seg, report=report, affine=affine)


def test_mine_pairs_geometry_and_bad_citations(tmp_path):
    flipped = np.diag([0.75, 0.75, -2.0, 1.0])  # stored axis 2 points inferior
    root = write_layout(
        tmp_path,
        [
            _fixture("A nodule in the left lung (series 2, image 5)."),
            _fixture("A nodule in the left lung (series 2, image 5).", flipped),
            _fixture("A nodule in the right lung (series 3, image 99)."),  # beyond 20 slices
        ],
    )
    with pytest.warns(UserWarning, match=r"train: 1 citation\(s\) outside .* train_3_a_1 "
                      r"\(image 99 of 20\)"):  # fmt: skip
        pairs = mine_pairs(CTReportDataset(root, "train", size=16))
    assert pairs.ids == ["train_1_a_1", "train_2_a_1"]
    assert pairs.snippets == ["A nodule in the left lung."] * 2 and pairs.anatomy == ["lung"] * 2
    assert pairs.target.tolist() == [4.5 / 20, 1 - 4.5 / 20]
    assert pairs.extent_mm.tolist() == [20 * 1.5, 20 * 2.0]
    assert axial_position(1, 4, "S") == 0.125 and axial_position(1, 4, "I") == 0.875

    sideways = np.array([[0, 0, 1.5, 0], [0, 0.75, 0, 0], [0.75, 0, 0, 0], [0, 0, 0, 1.0]])
    bad = write_layout(tmp_path / "bad", [_fixture("A nodule (series 2, image 3).", sideways)])
    with pytest.raises(ValueError, match="array axis 2 points 'R', expected S or I"):
        mine_pairs(CTReportDataset(bad, "train", size=16))


def test_run_localisation_names_a_split_without_citations(tmp_path):
    root = write_layout(tmp_path, [_fixture("A nodule in the left lung.")])
    write_layout(root, [_fixture("The lungs are clear.")], "valid")
    config = tiny_config(root, None, model=dict(FROZEN_MODEL))
    with pytest.raises(
        ValueError, match=r"no slice citations in the train reports \(Findings_EN\)"
    ):
        run_localisation(config, ("fvlm",))
    with pytest.raises(ValueError, match="presets: name at least one"):
        run_localisation(config, ())


@pytest.mark.slow
def test_bench_localisation_json(cited_data, tmp_path):
    if not CLI.is_file():
        pytest.skip(f"{CLI} is absent: install the package into .venv (make install)")
    config = tiny_config(cited_data, None, model=dict(FROZEN_MODEL)).save_yaml(tmp_path / "t.yaml")
    proc = subprocess.run(
        [str(CLI), "bench", "localisation", "--json", "--config", str(config), "--steps", "2",
         "--head-steps", "20", "--bootstrap", "50"],
        env=train_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {p: out[p] for p in (*PRESETS, TERM_PRESET)} | {
        name: out["baselines"][name] for name in ("anatomy_centroid", "dataset_mean")
    }
    rows["own head"] = out[TERM_PRESET]["own_head"]
    for name, row in rows.items():
        lo, hi = row["mae_mm_ci95"]
        assert lo <= row["mae_mm"] <= hi and row["mae_mm"] > 0, (name, row)
    assert out["head_steps"] == 20 and out["steps"] == 2 and out["n_valid_pairs"] > 0
