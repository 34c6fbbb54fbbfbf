"""The claims harness: verdict logic on constructed numbers, aggregation over seeds, and one tiny
real fvlm-vs-cagcl comparison (2 steps, 32^3) that checks the shapes of the result and the reuse of
finished runs. The real claims bench (minutes) is never run here."""

from __future__ import annotations

import math

import pytest
from helpers_train import FROZEN_MODEL, tiny_config

from cagcl_mini.anatomy import CT_RATE_LABELS
from cagcl_mini.bench import ablations as bench_ablations
from cagcl_mini.bench import claims as bench_claims
from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.evaluation.embed import as_embedded
from cagcl_mini.evaluation.zero_shot import zero_shot_detection
from cagcl_mini.experiments import ablations, claims
from cagcl_mini.phantom.build import make_dataset
from cagcl_mini.phantom.plan import PhantomSpec
from cagcl_mini.train import loop as train_mod
from cagcl_mini.train.log import read_log
from cagcl_mini.train.setup import dataset_for, model_for


def _agg(cos: list[float], std: list[float], auc: list[float], share: float = 0.0) -> dict:
    runs = [
        {
            "seed": i,
            "cross_anatomy_text_cos_mean": c,
            "prompt_auc_std": s,
            "macro_auc": a,
            "share_above_0.9": share,
            "family_auc": {"fvlm": a, "ctclip": a},
        }
        for i, (c, s, a) in enumerate(zip(cos, std, auc, strict=True))
    ]
    return claims.aggregate(runs)


def test_aggregate_means_stds_and_per_seed_lists():
    agg = _agg([0.9, 0.8, 0.7], [0.02, 0.04, 0.06], [0.6, 0.7, 0.8])
    assert agg["cross_anatomy_text_cos_mean"] == pytest.approx(0.8)
    assert agg["cross_anatomy_text_cos_mean_std"] == pytest.approx(0.1)  # sample std over seeds
    assert agg["per_seed"]["seed"] == [0, 1, 2]
    assert agg["per_seed"]["macro_auc"] == [0.6, 0.7, 0.8]
    assert agg["family_auc"]["ctclip"] == pytest.approx(0.7)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(3)
    assert agg["macro_auc_ci95"] == pytest.approx([0.7 - half, 0.7 + half])


def test_verdicts_follow_the_three_claims_on_means_and_per_seed():
    fvlm = _agg([0.95, 0.93, 0.94], [0.020, 0.020, 0.020], [0.80, 0.80, 0.80], share=0.9)
    cagcl = _agg([0.05, 0.95, 0.04], [0.005, 0.015, 0.008], [0.95, 0.85, 0.92])
    out = claims.verdicts(fvlm, cagcl)
    assert out["n_seeds"] == 3
    assert {k: out["a"][k] for k in ("holds", "seeds", "fvlm_share_above_0.9")} == {
        "holds": True, "seeds": 2, "fvlm_share_above_0.9": 0.9
    }  # fmt: skip
    diffs = [0.05 - 0.95, 0.95 - 0.93, 0.04 - 0.94]  # paired by seed
    assert out["a"]["cagcl_minus_fvlm"] == pytest.approx(sum(diffs) / 3)
    lo, hi = out["a"]["cagcl_minus_fvlm_ci95"]
    assert lo < sum(diffs) / 3 < hi and hi > 0  # seed 1 makes the difference uncertain
    assert out["c"]["cagcl_minus_fvlm"] == pytest.approx((0.15 + 0.05 + 0.12) / 3)
    # b: 0.015 > 0.5 * 0.02 in seed 1; the means 0.00933 / 0.02 = 0.47 hold
    assert out["b"]["holds"] and out["b"]["seeds"] == 2
    assert out["b"]["ratio"] == pytest.approx((0.005 + 0.015 + 0.008) / 3 / 0.02)
    # c: seed 1 reaches only 0.85; the mean 0.907 >= 0.9 and above fvlm
    assert out["c"]["holds"] and out["c"]["seeds"] == 2 and out["c_above_fvlm"]["seeds"] == 3
    assert "transfer" not in out  # no site B scores in these runs
    worse = _agg([0.96, 0.96, 0.96], [0.03, 0.03, 0.03], [0.7, 0.7, 0.7])
    out = claims.verdicts(fvlm, worse)
    assert not out["a"]["holds"] and not out["b"]["holds"] and not out["c"]["holds"]
    assert out["c_above_fvlm"]["seeds"] == 0


def test_the_transfer_verdict_pairs_site_b_by_seed():
    def with_sites(auc, b, c=None):
        runs = [
            {"seed": i, "cross_anatomy_text_cos_mean": 0.5, "prompt_auc_std": 0.01,
             "macro_auc": a, "share_above_0.9": 0.0, "family_auc": {"fvlm": a},
             "site_b_macro_auc": x, "site_b_minus_a": x - a}
            for i, (a, x) in enumerate(zip(auc, b, strict=True))
        ]  # fmt: skip
        for run, x in zip(runs, c or [], strict=False):
            run |= {"site_c_macro_auc": x, "site_c_minus_a": x - run["macro_auc"]}
        return claims.aggregate(runs)

    fvlm = with_sites([0.80, 0.82, 0.81], [0.70, 0.75, 0.72])
    cagcl = with_sites([0.84, 0.83, 0.85], [0.78, 0.74, 0.80])
    verdicts = claims.verdicts(fvlm, cagcl)
    assert "transfer_c" not in verdicts  # no site C scores
    out = verdicts["transfer"]
    assert out["site_b_cagcl_minus_fvlm"] == pytest.approx((0.08 - 0.01 + 0.08) / 3)
    assert out["site_b_seeds_cagcl_ahead"] == 2
    drops = [
        (0.78 - 0.84) - (0.70 - 0.80),
        (0.74 - 0.83) - (0.75 - 0.82),
        (0.80 - 0.85) - (0.72 - 0.81),
    ]
    assert out["drop_cagcl_minus_fvlm"] == pytest.approx(sum(drops) / 3)
    lo, hi = out["drop_cagcl_minus_fvlm_ci95"]
    assert lo < sum(drops) / 3 < hi
    # a third site: its own entry, the same pairing; site B's entry unchanged
    fvlm_c = with_sites([0.80, 0.82, 0.81], [0.70, 0.75, 0.72], [0.60, 0.70, 0.65])
    cagcl_c = with_sites([0.84, 0.83, 0.85], [0.78, 0.74, 0.80], [0.70, 0.69, 0.75])
    both = claims.verdicts(fvlm_c, cagcl_c)
    assert both["transfer"] == out
    assert both["transfer_c"]["site_c_cagcl_minus_fvlm"] == pytest.approx((0.10 - 0.01 + 0.10) / 3)
    assert both["transfer_c"]["site_c_seeds_cagcl_ahead"] == 2


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims_data") / "phantom"
    return make_dataset(root, n_train=8, n_valid=6, size=32, seed=0, workers=1, progress=False)


def test_per_finding_transfer_pairs_each_finding_by_seed():
    def run(a, b):
        return {"per_abnormality_auc": a, "site_b_per_abnormality_auc": b}

    runs = [
        run(
            {"Emphysema": 0.9, "Renal cyst": 0.8, "Bronchiectasis": 0.7},
            {"Emphysema": 0.7, "Renal cyst": 0.8},
        ),
        run(
            {"Emphysema": 0.8, "Renal cyst": 0.6, "Bronchiectasis": 0.9},
            {"Emphysema": 0.7, "Renal cyst": 0.7},
        ),
    ]
    out = claims.per_finding_transfer(runs)
    assert set(out) == {"Emphysema", "Renal cyst"}  # only what both sites score
    assert out["Emphysema"]["auc"] == pytest.approx(0.85)
    assert out["Emphysema"]["site_b_auc"] == pytest.approx(0.7)
    assert out["Emphysema"]["drop"] == pytest.approx(-0.15)
    low, high = out["Emphysema"]["drop_ci95"]
    assert low < -0.15 < high
    assert out["Renal cyst"]["drop"] == pytest.approx(0.05)
    assert claims.per_finding_transfer([]) == {}
    assert claims.per_finding_transfer([{"per_abnormality_auc": {"Emphysema": 0.9}}]) == {}
    assert claims.per_finding_transfer(runs, "C") == {}  # these runs were not scored at C
    at_c = [{"per_abnormality_auc": r["per_abnormality_auc"],
             "site_c_per_abnormality_auc": r["site_b_per_abnormality_auc"]} for r in runs]  # fmt: skip
    assert claims.per_finding_transfer(at_c, "C")["Emphysema"]["site_c_auc"] == pytest.approx(0.7)


def test_compare_presets_trains_each_preset_and_seed_once(tiny_data, tmp_path, monkeypatch):
    base = tiny_config(tiny_data, None, steps=2, checkpoint_every=0, model=FROZEN_MODEL)
    result = claims.compare_presets(seeds=[1], base=base, out=tmp_path / "runs")
    assert set(result) == {"fvlm", "ctglip", "cagcl", "claims", "runs"}
    for name in ("fvlm", "cagcl"):
        agg = result[name]
        assert agg["per_seed"]["seed"] == [1]
        for key in claims.HEADLINE:
            assert key in agg and f"{key}_std" in agg and len(agg["per_seed"][key]) == 1
        cos = agg["per_seed"]["cross_anatomy_text_cos_mean"]
        assert all(-1.0 <= c <= 1.0 for c in cos)
        runs = result["runs"][name]
        assert [r["seed"] for r in runs] == [1] and all(r["train_seconds"] > 0 for r in runs)
    assert len(list((tmp_path / "runs").glob("*/final.pt"))) == 3
    # the same call again reuses every finished run
    monkeypatch.setattr(train_mod, "fit", lambda *a, **k: pytest.fail("trained again"))
    again = claims.compare_presets(seeds=[1], base=base, out=tmp_path / "runs")
    a, b = (r["fvlm"]["per_seed"]["cross_anatomy_text_cos_mean"] for r in (result, again))
    assert a == pytest.approx(b, abs=1e-6)


def test_compare_presets_names_a_site_it_cannot_score(tiny_data, tmp_path):
    base = tiny_config(tiny_data, None, steps=2, checkpoint_every=0, model=FROZEN_MODEL)
    with pytest.raises(ValueError, match="site must be one of A, B, C, got 'D'"):
        claims.compare_presets(seeds=[0], base=base, out=tmp_path, sites=("D",))
    with pytest.raises(ValueError, match="not 'A'"):
        claims.compare_presets(seeds=[0], base=base, out=tmp_path, sites=("A",))
    assert not list(tmp_path.iterdir()), "nothing trained before the sites were checked"


def test_claim_metrics_of_an_untrained_model(tiny_data):
    config = tiny_config(tiny_data, None, model=FROZEN_MODEL)
    valid = dataset_for(config, "valid")
    model = model_for(config, seed=3)
    metrics = claims.claim_metrics(model, valid)
    assert math.isnan(metrics["macro_auc"]) or 0.0 <= metrics["macro_auc"] <= 1.0
    assert set(metrics["family_auc"]) >= {"fvlm", "ctclip"}


def test_paired_differences_pair_runs_by_seed():
    runs = {
        "all": [{"macro_auc": 0.8, "seed": 0}, {"macro_auc": 0.7, "seed": 1}],
        "none": [{"macro_auc": 0.75, "seed": 0}, {"macro_auc": 0.69, "seed": 1}],
    }
    out = ablations.paired_differences(runs, "all", keys=("macro_auc",))
    assert set(out) == {"none"}
    assert out["none"]["macro_auc"] == pytest.approx(-0.03)
    lo, hi = out["none"]["macro_auc_ci95"]
    assert lo < -0.03 < hi


def test_ablations_train_each_setting_and_reuse_the_claims_runs(tiny_data, tmp_path, monkeypatch):
    base = tiny_config(tiny_data, None, steps=2, checkpoint_every=0, model=FROZEN_MODEL)
    folder = tmp_path / "runs"
    claims.compare_presets(seeds=[0], base=base, out=folder, presets=("ctglip", "cagcl"))
    trained: list[str] = []
    real_fit = train_mod.fit
    monkeypatch.setattr(
        train_mod,
        "fit",
        lambda config, **k: trained.append(config.run_name()) or real_fit(config, **k),
    )
    fractions = {"none": 0.0, "half": 0.5, "all": 1.0}
    scale = ablations.dictionary_scale([0], base, fractions, out=folder)
    assert set(scale["settings"]) == set(fractions) and scale["reference"] == "all"
    assert set(scale["vs_reference"]) == {"none", "half"}
    assert {"macro_auc", "macro_f1", "macro_auc_ci95"} <= set(scale["settings"]["none"])
    disease = ablations.disease_supervision([0], base, out=folder)
    assert set(disease["settings"]) == {"cagcl", "cagcl+disease"}
    # the claims' ctglip and cagcl runs are reused: only the new settings train
    assert len(trained) == 3 and all("-custom-" in n or "-ctglip-" in n for n in trained)
    (run_dir,) = [p for p in folder.glob("*-custom-*") if p.is_dir()]
    logged = read_log(run_dir / "log.jsonl")
    assert "disease" in logged[0] and math.isfinite(logged[-1]["disease"])
    diff = disease["vs_reference"]["cagcl+disease"]
    assert {"macro_auc", "cross_anatomy_text_cos_mean", "prompt_auc_std"} <= set(diff)


def test_claim_metrics_compare_site_b_on_the_findings_it_labels(tiny_data, tmp_path):
    config = tiny_config(tiny_data, None, model=FROZEN_MODEL)
    site_b_root = make_dataset(
        tmp_path / "b", PhantomSpec(2, 6, 32, 0, site="B"), workers=1, progress=False
    )
    site_c_root = make_dataset(
        tmp_path / "c", PhantomSpec(2, 6, 32, 0, site="C"), workers=1, progress=False
    )
    model = model_for(config, seed=3)
    site_b = CTReportDataset(site_b_root, "valid", size=32)
    site_c = CTReportDataset(site_c_root, "valid", size=32)
    valid = dataset_for(config, "valid")
    metrics = claims.claim_metrics(model, valid, transfer={"B": site_b, "C": site_c})
    at_c = zero_shot_detection(model, as_embedded(model, site_c))
    assert metrics["site_c_macro_auc"] == pytest.approx(at_c.macro["auc"], nan_ok=True)
    assert set(metrics["site_c_per_abnormality_auc"]) <= set(CT_RATE_LABELS)
    assert "site_b_macro_auc" not in claims.claim_metrics(model, valid)
    transfer = zero_shot_detection(model, as_embedded(model, site_b))
    assert metrics["site_b_macro_auc"] == pytest.approx(transfer.macro["auc"], nan_ok=True)
    expected = transfer.macro_ct_rate["auc"] - metrics["macro_auc_ct_rate"]
    assert metrics["site_b_minus_a"] == pytest.approx(expected, nan_ok=True)
    table = metrics["site_b_per_abnormality_auc"]
    assert table == pytest.approx(dict(transfer.table["auc"]), nan_ok=True)
    assert set(table) <= set(CT_RATE_LABELS)  # site B labels only the CT-RATE findings


def test_the_bench_wrappers_share_a_folder_and_report_what_they_ran(tiny_data, tmp_path):
    base = tiny_config(tiny_data, None, steps=2, checkpoint_every=0, model=FROZEN_MODEL)
    folder = tmp_path / "runs"
    result = bench_claims.benchmark(seeds=1, out=folder, base=base, steps=3)
    assert result["config"]["steps"] == 3 and result["seeds"] == 1 and result["prompts"] is None
    assert result["claims"]["n_seeds"] == 1 and result["wall_seconds"] > 0
    ablation = bench_ablations.benchmark(which=["disease"], seeds=1, out=folder, base=base, steps=3)
    assert set(ablation) >= {"disease", "config", "wall_seconds"} and "dictionary" not in ablation
    reference = ablation["disease"]["settings"]["cagcl"]["per_seed"]["macro_auc"]
    assert reference == pytest.approx(result["cagcl"]["per_seed"]["macro_auc"], nan_ok=True)
    with pytest.raises(ValueError, match="unknown ablation 'dictionry'"):
        bench_ablations.benchmark(which=["dictionry"], base=base)
