"""Zero-shot evaluation: metrics, threshold rules, detection, robustness, collapse, recognition,
retrieval on constructed numbers; then end to end with a tiny real model on a tiny phantom set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cagcl_mini import fileio
from cagcl_mini.anatomy import (
    ABNORMALITIES,
    ALL_LABELS,
    ANATOMY_NAMES,
    NUM_ANATOMIES,
    prompt_family_names,
    prompt_pair,
)
from cagcl_mini.cli.main import main as cli_main
from cagcl_mini.evaluation import collapse, embed, evaluate, metrics, retrieval, zero_shot
from cagcl_mini.evaluation.prompts import family_from_templates
from cagcl_mini.phantom.build import make_dataset
from cagcl_mini.train import checkpoint
from cagcl_mini.train.config import preset
from cagcl_mini.train.setup import model_for

# ----------------------------------------------------------------------------- metrics


def test_perfect_scorer_gives_perfect_metrics():
    labels = np.array([0, 0, 0, 1, 1, 0, 1])
    scores = 0.1 + 0.8 * labels
    out = metrics.detection_metrics(scores, labels)
    assert out["auc"] == 1.0
    for m in metrics.METRICS:
        assert out[m] == pytest.approx(1.0), m
    assert (out["n"], out["n_pos"]) == (7, 3)
    assert 0.1 <= out["threshold"] < 0.9


def test_reversed_scorer_has_auc_zero():
    labels = np.array([0, 1, 0, 1, 1])
    assert metrics.auc(1.0 - labels * 0.7, labels) == 0.0


def test_threshold_rule_picks_closest_roc_point_and_larger_on_ties():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    # (FPR, TPR): 0.0 -> (1,1) d=1; 0.3 -> (.5,1) d=.5; 0.38 -> (.5,.5) d=.71; 0.5 -> (0,.5) d=.5
    assert metrics.closest_roc_threshold(scores, labels, [0.0, 0.3, 0.38, 0.9]) == 0.3
    assert metrics.closest_roc_threshold(scores, labels, [0.0, 0.3, 0.38, 0.5, 0.9]) == 0.5


def test_threshold_rule_on_the_default_unit_grid():
    scores = np.array([0.2, 0.6, 0.55, 0.9])
    labels = np.array([0, 0, 1, 1])
    # thresholds in [0.2, 0.55) and [0.6, 0.9) both reach distance 0.5; the largest grid point
    # below 0.9 wins: 89/99
    thr = metrics.closest_roc_threshold(scores, labels)
    assert thr == pytest.approx(89 / 99)
    assert metrics.roc_point(scores, labels, thr) == (0.0, 0.5)
    rng = metrics.closest_roc_threshold(scores, labels, grid="range")
    assert 0.6 <= rng < 0.9


def test_binary_metrics_by_hand():
    scores = np.array([0.2, 0.6, 0.55, 0.9])
    labels = np.array([0, 0, 1, 1])
    out = metrics.binary_metrics(scores, labels, 0.5)  # predictions 0, 1, 1, 1
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["sensitivity"] == pytest.approx(1.0)
    assert out["specificity"] == pytest.approx(0.5)
    # class 0: P=1, R=.5, F1=2/3; class 1: P=2/3, R=1, F1=.8; equal support
    assert out["f1_weighted"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_honest_variant_uses_the_training_threshold():
    valid_s, valid_y = np.array([0.2, 0.3, 0.7, 0.8]), np.array([0, 0, 1, 1])
    train_s, train_y = np.array([0.1, 0.85, 0.9, 0.95]), np.array([0, 0, 1, 1])
    out = metrics.detection_metrics(valid_s, valid_y, train_s, train_y)
    train_thr = metrics.closest_roc_threshold(train_s, train_y)
    assert 0.85 <= train_thr < 0.9
    assert out["honest_threshold"] == train_thr
    assert 0.3 <= out["threshold"] < 0.7
    assert out["sensitivity"] == 1.0 and out["accuracy"] == 1.0
    # the training threshold sits above every validation score: nothing predicted positive
    assert out["honest_sensitivity"] == 0.0
    assert out["honest_specificity"] == 1.0
    assert out["honest_accuracy"] == 0.5
    no_train = metrics.detection_metrics(valid_s, valid_y)
    assert math.isnan(no_train["honest_threshold"]) and math.isnan(no_train["honest_accuracy"])


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.auc(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="0/1"):
        metrics.auc(np.zeros(2), np.array([0, 2]))
    with pytest.raises(ValueError, match="both classes"):
        metrics.closest_roc_threshold(np.zeros(2), np.zeros(2))
    assert math.isnan(metrics.auc(np.array([0.1, 0.2]), np.array([1, 1])))


# ----------------------------------------------------------------------------- detection tables


def test_detection_from_scores_skips_single_class_and_macro_averages():
    scores = {
        "Lung nodule": (np.array([0.1, 0.9, 0.2, 0.8]), np.array([0, 1, 0, 1])),  # AUC 1
        "Cardiomegaly": (np.array([0.3, 0.4]), np.array([0, 0])),  # one class: skipped
        "Hepatic steatosis": (np.array([0.9, 0.1, 0.8]), np.array([0, 1, 0])),  # AUC 0
        "Splenomegaly": (np.array([]), np.array([], dtype=np.int64)),  # anatomy never present
    }
    res = zero_shot.detection_from_scores(scores, family="ctclip")
    assert list(res.table.index) == ["Lung nodule", "Hepatic steatosis"]
    assert set(res.skipped) == {"Cardiomegaly", "Splenomegaly"}
    assert "one class" in res.skipped["Cardiomegaly"] and "absent" in res.skipped["Splenomegaly"]
    assert res.macro["auc"] == pytest.approx(0.5)
    assert res.macro["n_abnormalities"] == 2
    assert res.macro_ct_rate["auc"] == 1.0 and res.macro_ct_rate["n_abnormalities"] == 1
    assert res.table.loc["Lung nodule", "anatomy"] == "lung"
    assert not res.table.loc["Hepatic steatosis", "ct_rate"]
    d = res.to_dict()
    assert d["family"] == "ctclip" and set(d["per_abnormality"]) == {
        "Lung nodule",
        "Hepatic steatosis",
    }
    json.dumps(fileio.jsonable(d), allow_nan=False)


# A stand-in model: prompt and description embeddings chosen by hand, so the expected numbers are
# known exactly. Negative prompts embed to e0, positive ones to e1 (swapped for `flip` families).
E = 6
E0, E1 = torch.eye(E)[0], torch.eye(E)[1]


class HandModel:
    training = False

    def __init__(self, flip: tuple[str, ...] = (), scale: float = 10.0):
        self.lookup = {}
        for fam in prompt_family_names():
            for ab in ABNORMALITIES:
                neg, pos = prompt_pair(ab, fam)
                a, b = (E1, E0) if fam in flip else (E0, E1)
                self.lookup.setdefault(neg, a)
                self.lookup.setdefault(pos, b)
        self._scale = scale
        self.calls = []

    def encode_text(self, texts):
        self.calls.append(list(texts))
        out = []
        for t in texts:
            if t in self.lookup:
                out.append(self.lookup[t])
            else:  # descriptions: a fixed direction per string
                g = torch.Generator().manual_seed(sum(map(ord, t)))
                out.append(F.normalize(torch.randn(E, generator=g), dim=0))
        return torch.stack(out)

    def scale(self):
        return torch.tensor(self._scale)

    def anatomy_prompt_embeddings(self):
        return torch.eye(E)[:NUM_ANATOMIES] if E >= NUM_ANATOMIES else torch.eye(NUM_ANATOMIES, E)

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def hand_split(n: int = 8, seed: int = 0, absent: str = "spleen") -> embed.EmbeddedSplit:
    """Every anatomy is abnormal (all its labels 1, v = e1) in odd volumes, normal (v = e0) in
    even ones; ``absent`` is missing everywhere."""
    abn = torch.arange(n) % 2 == 1
    present = torch.ones(n, NUM_ANATOMIES, dtype=torch.bool)
    present[:, ANATOMY_NAMES.index(absent)] = False
    v = torch.where(abn[:, None, None], E1, E0).expand(n, NUM_ANATOMIES, E).clone()
    v[~present] = 0
    labels = abn[:, None].float().expand(n, len(ALL_LABELS)).clone()
    texts = [[f"{a} text {i}" if present[i, k] else "" for k, a in enumerate(ANATOMY_NAMES)]
             for i in range(n)]  # fmt: skip
    return embed.EmbeddedSplit(
        v=v, present=present, labels=labels, abnormal=abn[:, None] & present, ids=[str(i) for i in range(n)],
        texts=texts, t=v.clone(),
    )  # fmt: skip


def test_zero_shot_detection_with_hand_built_embeddings():
    model, split = HandModel(), hand_split()
    res = zero_shot.zero_shot_detection(model, split, train_split=split)
    spleen = {ab.name for ab in ABNORMALITIES if ab.anatomy == "spleen"}
    assert set(res.skipped) == spleen
    assert len(res.table) == len(ABNORMALITIES) - len(spleen)
    assert res.macro["auc"] == 1.0 and res.macro_ct_rate["auc"] == 1.0
    assert res.macro_ct_rate["n_abnormalities"] == 18  # no CT-RATE label sits in the spleen
    assert res.macro["honest_accuracy"] == 1.0
    s, y = res.scores["Lung nodule"]
    # score = softmax(10 * [<v,t_neg>, <v,t_pos>])[1]: sigmoid(10) for abnormal, sigmoid(-10) normal
    np.testing.assert_allclose(
        s, np.where(y == 1, 1 / (1 + np.exp(-10)), 1 / (1 + np.exp(10))), rtol=1e-9
    )
    assert list(y) == [0, 1] * 4


def test_prompt_robustness_mean_and_population_std():
    model, split = HandModel(flip=("colipri",)), hand_split()
    rob = zero_shot.prompt_robustness(model, split)
    assert rob["families"] == list(prompt_family_names())
    assert rob["macro_auc"]["colipri"] == 0.0
    assert all(rob["macro_auc"][f] == 1.0 for f in rob["families"] if f != "colipri")
    assert rob["mean"] == pytest.approx(0.8)
    assert rob["std"] == pytest.approx(0.4)  # np.std([1,1,1,1,0]) with ddof=0
    table = zero_shot.robustness_table(rob)
    assert list(table.index) == list(prompt_family_names())
    assert table.loc["colipri", "macro_auc"] == 0.0


def test_evaluate_model_takes_prompt_family_objects():
    model, split = HandModel(flip=("colipri",)), hand_split()
    mine = family_from_templates("mine", "Not {x}.", "{X}.")  # fvlm's templates: AUC 1
    res = evaluate.evaluate_model(model, split, family=mine, families=["colipri", mine])
    assert res["detection"]["family"] == "mine" and res["summary"]["macro_auc"] == 1.0
    assert res["prompt_robustness"]["families"] == ["colipri", "mine"]
    assert res["prompt_robustness"]["macro_auc"] == {"colipri": 0.0, "mine": 1.0}
    assert "prompt family 'mine'" in evaluate.format_report(res)


# ----------------------------------------------------------------------------- recognition, retrieval


def test_anatomy_recognition_perfect_and_confused():
    prompts = F.normalize(
        torch.randn(NUM_ANATOMIES, 16, generator=torch.Generator().manual_seed(0)), dim=1
    )
    v = prompts[None].expand(5, -1, -1).clone()
    present = torch.ones(5, NUM_ANATOMIES, dtype=torch.bool)
    present[0, 3] = False
    out = retrieval.anatomy_recognition_from_embeddings(v, present, prompts)
    assert out["top1"] == 1.0 and out["n_tokens"] == 5 * NUM_ANATOMIES - 1
    assert all(a == 1.0 for a in out["per_anatomy"].values())
    v[:, 0] = prompts[1]  # every lung token looks like the heart prompt
    out = retrieval.anatomy_recognition_from_embeddings(v, present, prompts)
    assert out["per_anatomy"]["lung"] == 0.0
    assert out["top1"] == pytest.approx(1 - 5 / (5 * NUM_ANATOMIES - 1))
    assert out["confusion"][0][1] == 5


def test_retrieval_exact_identical_and_random():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(50, 16, generator=g), dim=1)
    out = retrieval.retrieval_from_embeddings(x, x)
    assert out["image_to_text"]["recall@1"] == 1.0 and out["text_to_image"]["recall@1"] == 1.0
    same = torch.ones(20, 4) / 2  # a collapsed model: every pair ties
    out = retrieval.retrieval_from_embeddings(same, same)
    assert out["image_to_text"]["recall@1"] == pytest.approx(1 / 20)
    assert out["text_to_image"]["recall@10"] == pytest.approx(10 / 20)
    n = 400
    img = F.normalize(torch.randn(n, 32, generator=g), dim=1)
    txt = F.normalize(torch.randn(n, 32, generator=g), dim=1)
    out = retrieval.retrieval_from_embeddings(img, txt)
    assert out["chance"]["recall@10"] == 10 / n
    for k, chance in ((1, 1 / n), (10, 10 / n)):
        assert out["image_to_text"][f"recall@{k}"] < 4 * chance + 0.01
    assert (
        out["image_to_text"]["recall@1"]
        <= out["image_to_text"]["recall@5"]
        <= out["image_to_text"]["recall@10"]
    )


def test_retrieval_of_an_embedded_split_pools_present_anatomies():
    split = hand_split(n=6)
    g = torch.Generator().manual_seed(1)
    split.v = (
        F.normalize(torch.randn(6, NUM_ANATOMIES, E, generator=g), dim=-1)
        * split.present[..., None]
    )
    split.t = split.v.clone()
    img, txt, keep = retrieval.volume_report_embeddings(split)
    assert keep.tolist() == list(range(6))
    torch.testing.assert_close(img.norm(dim=1), torch.ones(6))
    assert retrieval.retrieval_recall(split)["image_to_text"]["recall@1"] == 1.0


# ----------------------------------------------------------------------------- collapse


def test_collapse_identical_embeddings():
    emb = np.tile(np.array([[0.6, 0.8, 0.0]]), (6, 1))
    idx = np.array([0, 0, 1, 1, 2, 2])
    stats = collapse.text_collapse_stats(emb, idx, [f"s{i}" for i in range(6)])
    for g in ("within", "across", "all"):
        assert stats[g]["mean"] == pytest.approx(1.0)
        assert stats[g]["share_above"] == 1.0
        assert sum(stats[g]["hist"]) == stats[g]["n_pairs"]
    assert stats["within"]["n_pairs"] == 3 and stats["across"]["n_pairs"] == 12
    assert stats["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert len(stats["bin_edges"]) == len(stats["all"]["hist"]) + 1


def test_collapse_orthonormal_embeddings():
    emb = np.eye(8)[:6] * 3.0  # scale does not matter: rows are normalised
    idx = np.array([0, 1, 2, 0, 1, 2])
    stats = collapse.text_collapse_stats(emb, idx)
    assert stats["across"]["mean"] == pytest.approx(0.0) and stats["within"][
        "mean"
    ] == pytest.approx(0.0)
    assert stats["all"]["share_above"] == 0.0 and stats["all"]["std"] == pytest.approx(0.0)
    assert stats["effective_rank"] == pytest.approx(6.0)
    assert set(stats["per_anatomy"]) == {"lung", "heart", "aorta"}


def test_collapse_leaves_out_identical_strings_and_subsamples():
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    idx = np.array([0, 0, 0, 1])
    stats = collapse.text_collapse_stats(emb, idx, ["a", "a", "b", "c"])
    assert stats["within"]["n_pairs"] == 2  # (a,a) is not a pair of distinct descriptions
    assert stats["within"]["mean"] == pytest.approx(0.0)
    big = np.random.default_rng(0).normal(size=(50, 4))
    sub = collapse.text_collapse_stats(big, np.arange(50) % 3, max_texts=20)
    assert sub["n_texts"] == 20
    with pytest.raises(ValueError, match="zero"):
        collapse.text_collapse_stats(np.zeros((3, 2)), np.zeros(3))


def test_collect_and_split_text_embeddings_deduplicate():
    model = HandModel()
    texts = [["a", "b", "", "", "", "", "", ""], ["a", "c", "", "", "", "", "", ""]]
    by = collapse.unique_texts_by_anatomy(texts)
    assert by == {"lung": ["a"], "heart": ["b", "c"]}
    emb, idx, strings = collapse.collect_text_embeddings(model, {**by, "liver": ["a", "a", ""]})
    assert strings == ["a", "b", "c", "a"] and idx.tolist() == [0, 1, 1, 5]
    assert emb.shape == (4, E)
    t = torch.arange(2 * 8 * 3, dtype=torch.float32).view(2, 8, 3)
    emb2, idx2, strings2 = collapse.split_text_embeddings(t, texts)
    assert strings2 == ["a", "b", "c"] and idx2.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(emb2[2], t[1, 1].numpy())
    with pytest.raises(KeyError, match="unknown anatomy"):
        collapse.collect_text_embeddings(model, {"brain": ["x"]})


def test_jsonable_makes_strict_json():
    data = {
        "a": float("nan"),
        "b": np.float32(0.5),
        "c": [np.int64(3), float("inf")],
        "d": torch.tensor(2.0),
    }
    assert fileio.jsonable(data) == {"a": None, "b": 0.5, "c": [3, None], "d": 2.0}


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):

    root = tmp_path_factory.mktemp("eval_data") / "phantom"
    return make_dataset(root, n_train=8, n_valid=8, size=32, seed=0, workers=1, progress=False)


@pytest.fixture(scope="module")
def tiny_model():
    from cagcl_mini.nn.model import AnatomyCLIP, ModelConfig

    torch.manual_seed(0)
    return AnatomyCLIP(ModelConfig(vision="tiny", embed_dim=32))


NOTEBOOK_KEYS = {
    "summary", "detection", "prompt_robustness", "collapse", "anatomy_recognition", "retrieval",
    "n_volumes", "n_train_volumes", "logit_scale", "grid",
}  # fmt: skip


def test_embed_and_evaluate_a_tiny_real_model(tiny_model, tiny_data):
    from cagcl_mini.data.dataset import CTReportDataset

    valid = CTReportDataset(tiny_data, "valid", size=32)
    train = CTReportDataset(tiny_data, "train", size=32)
    tiny_model.train()
    split = embed.embed_dataset(tiny_model, valid, batch_size=3)
    assert tiny_model.training  # mode restored
    n = len(valid)
    assert split.v.shape == (n, NUM_ANATOMIES, 32) and split.t.shape == (n, NUM_ANATOMIES, 32)
    assert split.labels.shape == (n, len(ALL_LABELS)) and split.ids == valid.ids
    norms = split.v.norm(dim=-1)
    torch.testing.assert_close(norms[split.present], torch.ones(int(split.present.sum())))
    assert torch.all(norms[~split.present] == 0)
    assert torch.all(split.t.norm(dim=-1)[~split.text_present] == 0)
    assert split.scale == pytest.approx(1 / 0.07, rel=1e-5)

    families = ("fvlm", "colipri")
    res = evaluate.evaluate_model(tiny_model, split, train, families=families)
    assert NOTEBOOK_KEYS <= set(res)
    det = res["detection"]
    assert set(det["per_abnormality"]) | set(det["skipped"]) == {ab.name for ab in ABNORMALITIES}
    assert det["per_abnormality"], "the tiny set should have some two-class abnormality"
    aucs = [r["auc"] for r in det["per_abnormality"].values()]
    assert res["summary"]["macro_auc"] == pytest.approx(float(np.mean(aucs)))
    assert res["n_volumes"] == n and res["n_train_volumes"] == len(train)
    rob = res["prompt_robustness"]
    assert rob["families"] == list(families)
    assert rob["macro_auc"]["fvlm"] == pytest.approx(res["summary"]["macro_auc"])
    assert rob["std"] == pytest.approx(float(np.std(list(rob["macro_auc"].values()))))
    assert res["anatomy_recognition"]["n_tokens"] == int(split.present.sum())
    assert res["retrieval"]["n"] == n
    distinct = {(k, t) for row in split.texts for k, t in enumerate(row) if t}
    assert res["collapse"]["n_texts"] == len(distinct)
    for key, value in res["summary"].items():
        for v in value if isinstance(value, list) else [value]:
            assert v is None or math.isnan(v) or -1.0 <= v <= len(distinct), key
    lo, hi = res["summary"]["macro_auc_ci95"]
    assert math.isnan(lo) or lo <= res["summary"]["macro_auc"] <= hi
    json.dumps(fileio.jsonable(res), allow_nan=False)


def test_cli_untrained_prints_tables_and_writes_json(tiny_data, tmp_path, capsys):
    out = tmp_path / "results" / "eval.json"
    argv = ["--untrained", "--data", str(tiny_data), "--image-size", "32", "--json", str(out),
            "--families", "hlip", "paraphrase", "--family", "ctclip", "--limit", "5"]  # fmt: skip
    assert cli_main(["evaluate", *argv]) == 0
    data = json.loads(out.read_text())  # strict JSON: NaN became null
    assert NOTEBOOK_KEYS | {"meta"} <= set(data)
    assert data["meta"]["untrained"] and data["detection"]["family"] == "ctclip"
    assert data["n_volumes"] == 5 and data["n_train_volumes"] == 5  # honest thresholds by default
    assert data["prompt_robustness"]["families"] == ["hlip", "paraphrase"]
    assert not list(tmp_path.joinpath("results").glob(".*"))  # no temp file left behind
    text = capsys.readouterr().out
    family_block = text.split("Prompt families")[1].split("mean ")[0]
    rows = [ln.split()[0] for ln in family_block.splitlines()[3:] if ln.strip()]
    assert rows == ["hlip", "paraphrase"]
    assert "Anatomy recognition top-1" in text and "recall@10" in text


def test_cli_adds_the_families_of_a_prompt_file(tiny_data, tmp_path, capsys):
    out = tmp_path / "eval.json"
    prompts = Path(__file__).resolve().parents[2] / "examples" / "prompts.yaml"
    argv = ["--untrained", "--data", str(tiny_data), "--image-size", "32", "--json", str(out),
            "--limit", "4", "--no-honest", "--families", "fvlm", "--prompts", str(prompts),
            "--family", "radiologist[2]"]  # fmt: skip
    assert cli_main(["evaluate", *argv]) == 0
    data = json.loads(out.read_text())
    file_names = ["plain", "radiologist[1]", "radiologist[2]", "ensembled"]
    assert data["prompt_robustness"]["families"] == ["fvlm", *file_names]
    assert data["detection"]["family"] == "radiologist[2]"
    assert data["meta"]["prompts"] == str(prompts) and not data["meta"]["prompts_only"]
    assert list(data["meta"]["prompt_families"]) == file_names
    assert data["meta"]["prompt_families"]["ensembled"]["ensemble"]
    text = capsys.readouterr().out
    family_block = text.split("Prompt families")[1].split("mean ")[0]
    rows = [ln.split()[0] for ln in family_block.splitlines()[3:] if ln.strip()]
    assert rows == ["fvlm", *file_names]


def test_cli_evaluates_a_checkpoint_next_to_it(tiny_data, tmp_path, capsys):
    config = preset("cpu-quick", data_root=str(tiny_data), image_size=32, data_cache=False,
                    model={"vision": "tiny", "embed_dim": 16})  # fmt: skip
    model = model_for(config)
    ckpt = checkpoint.save_checkpoint(
        tmp_path / "run" / "final.pt",
        {"step": 0, "config": config.to_dict(), "model": model.checkpoint_state_dict()},
    )
    argv = ["--checkpoint", str(ckpt), "--limit", "4", "--no-honest", "--families", "fvlm"]
    assert cli_main(["evaluate", *argv]) == 0
    data = json.loads((tmp_path / "run" / "eval_valid.json").read_text())
    assert data["n_volumes"] == 4 and data["n_train_volumes"] == 0
    assert data["meta"]["checkpoint"] == str(ckpt)
    assert data["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5)
    capsys.readouterr()


def test_cli_names_a_missing_checkpoint(tmp_path, capsys):
    missing = tmp_path / "nope" / "final.pt"
    assert cli_main(["evaluate", "--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
