"""Retrieval report generation: the nearest training description per anatomy on constructed
embeddings, the k-vote, the baselines, then a tiny real model on a tiny phantom set."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from cagcl_mini.anatomy import ALL_LABELS, ANATOMY_NAMES, NUM_ANATOMIES
from cagcl_mini.evaluation import report_generation as rg
from cagcl_mini.evaluation import retrieval
from cagcl_mini.evaluation.embed import EmbeddedSplit, embed_dataset
from cagcl_mini.evaluation.report_metrics import report_labels
from cagcl_mini.phantom.build import make_dataset

E = 8


def _split(t: torch.Tensor, texts: list[list[str]], abnormal: torch.Tensor) -> EmbeddedSplit:
    n = t.shape[0]
    present = torch.tensor([[bool(x) for x in row] for row in texts])
    return EmbeddedSplit(
        v=t.clone(), t=t, present=present, abnormal=abnormal, texts=texts,
        labels=torch.zeros(n, len(ALL_LABELS)), ids=[f"v{i}" for i in range(n)],
    )  # fmt: skip


def _bank_split(n: int = 5, seed: int = 0) -> EmbeddedSplit:
    """``n`` training volumes, every anatomy described as "<anatomy> <i>." with its own vector."""
    g = torch.Generator().manual_seed(seed)
    t = F.normalize(torch.randn(n, NUM_ANATOMIES, E, generator=g), dim=-1)
    texts = [[f"{name} {i}." for name in ANATOMY_NAMES] for i in range(n)]
    return _split(t, texts, torch.zeros(n, NUM_ANATOMIES, dtype=torch.bool))


def test_each_anatomy_copies_its_nearest_training_description_in_catalog_order():
    train = _bank_split()
    order = [3, 0, 4, 1, 2, 2, 0, 1][:NUM_ANATOMIES]  # the training volume each anatomy matches
    v = torch.stack([train.t[j, k] for k, j in enumerate(order)])[None]
    query = dataclasses.replace(train, v=v, present=torch.ones(1, NUM_ANATOMIES, dtype=torch.bool))
    out = rg.generate_reports(query, train)
    assert out.texts[0] == [f"{name} {j}." for name, j in zip(ANATOMY_NAMES, order, strict=False)]
    assert out.reports[0] == " ".join(out.texts[0])
    assert out.source[0].tolist() == order and len(out) == 1


def test_an_absent_anatomy_writes_nothing():
    train = _bank_split()
    present = torch.ones(2, NUM_ANATOMIES, dtype=torch.bool)
    present[0, 1] = False
    query = dataclasses.replace(train, v=train.t[:2], present=present)
    out = rg.generate_reports(query, train)
    assert out.texts[0][1] == "" and out.source[0, 1] == -1
    assert ANATOMY_NAMES[1] not in out.reports[0] and ANATOMY_NAMES[1] in out.reports[1]
    assert out.reports[1] == rg.assemble_report(train.texts[1])


def test_the_k_nearest_vote_on_normal_or_abnormal():
    # anatomy 0 of the query: nearest (abnormal) at cos 0.9, then two normal ones at 0.8 and 0.7
    n = 4
    t = torch.zeros(n, NUM_ANATOMIES, E)
    t[:, :, 0] = 1.0  # other anatomies: all alike
    for row, c in enumerate((0.9, 0.8, 0.7, -1.0)):
        t[row, 0] = torch.tensor([c, (1 - c * c) ** 0.5] + [0.0] * (E - 2))
    abnormal = torch.zeros(n, NUM_ANATOMIES, dtype=torch.bool)
    abnormal[0, 0] = abnormal[3, 0] = True
    texts = [[f"{name} {i}." for name in ANATOMY_NAMES] for i in range(n)]
    train = _split(t, texts, abnormal)
    v = torch.zeros(1, NUM_ANATOMIES, E)
    v[0, :, 0] = 1.0
    query = dataclasses.replace(train, v=v, present=torch.ones(1, NUM_ANATOMIES, dtype=torch.bool))
    assert rg.generate_reports(query, train).source[0, 0] == 0  # the nearest: abnormal
    voted = rg.generate_reports(query, train, k_vote=3)
    assert voted.source[0, 0] == 1 and not voted.abnormal[0, 0]  # 2 of 3 say normal
    tie = rg.generate_reports(query, train, k_vote=2)  # 1 vs 1: the nearest's class
    assert tie.source[0, 0] == 0 and tie.abnormal[0, 0]
    with pytest.raises(ValueError, match="k_vote must be >= 1, got 0"):
        rg.generate_reports(query, train, k_vote=0)


def test_mismatched_embeddings_are_named():
    train = _bank_split()
    query = dataclasses.replace(
        train, v=torch.zeros(2, NUM_ANATOMIES, E + 1), present=train.present[:2]
    )
    with pytest.raises(ValueError, match=f"do not match the query's v of size {E + 1}"):
        rg.generate_reports(query, train)
    with pytest.raises(ValueError, match="train: the split has no text embeddings t"):
        rg.description_bank(dataclasses.replace(train, t=None))
    with pytest.raises(ValueError, match=f"descriptions: expected K={NUM_ANATOMIES} texts"):
        rg.assemble_report(["one"])


def test_most_common_normal_report_and_random_reports():
    train = _bank_split(n=4)
    texts = [list(row) for row in train.texts]
    for i in (1, 2):
        texts[i][0] = "The lungs are clear."
    texts[3][0] = "A nodule."
    abnormal = train.abnormal.clone()
    abnormal[3, 0] = True
    train = dataclasses.replace(train, texts=texts, abnormal=abnormal)
    report = rg.most_common_normal_report(train)
    assert report.startswith("The lungs are clear. ") and "A nodule" not in report
    assert report.split(". ")[1] == f"{ANATOMY_NAMES[1]} 0"  # first seen wins a tie
    pool = ["Report a.", "Report b.", ""]
    drawn = rg.random_reports(pool, 50, seed=3)
    assert drawn == rg.random_reports(pool, 50, seed=3) and set(drawn) == {"Report a.", "Report b."}
    with pytest.raises(ValueError, match="no non-empty training report"):
        rg.random_reports(["", " "], 3)
    abnormal_only = dataclasses.replace(train, abnormal=torch.ones_like(abnormal))
    with pytest.raises(ValueError, match="no normal description in the training split"):
        rg.most_common_normal_report(abnormal_only)


def test_a_shuffled_pairing_retrieves_at_chance():
    g = torch.Generator().manual_seed(0)
    n = 300
    x = F.normalize(torch.randn(n, 16, generator=g), dim=1)
    out = retrieval.retrieval_from_embeddings(x, x[torch.randperm(n, generator=g)], n_bootstrap=200)
    for direction in ("image_to_text", "text_to_image"):
        for k in (1, 5, 10):
            lo, hi = out[direction][f"recall@{k}_ci95"]
            assert out[direction][f"recall@{k}"] <= 4 * k / n and lo <= k / n + 0.02, (direction, k)
    same = retrieval.retrieval_from_embeddings(x, x, n_bootstrap=50)
    assert same["image_to_text"]["recall@1"] == 1.0 and same["text_to_image"]["recall@1_ci95"] == [
        1.0,
        1.0,
    ]


@pytest.fixture(scope="module")
def tiny_embedded(tmp_path_factory):
    from cagcl_mini.data.dataset import CTReportDataset
    from cagcl_mini.nn.model import AnatomyCLIP, ModelConfig

    root = tmp_path_factory.mktemp("report_generation") / "phantom"
    root = make_dataset(root, n_train=8, n_valid=6, size=32, seed=0, workers=1, progress=False)
    torch.manual_seed(0)
    model = AnatomyCLIP(ModelConfig(vision="tiny", embed_dim=32))
    train = embed_dataset(model, CTReportDataset(root, "train", size=32), batch_size=4)
    valid = embed_dataset(model, CTReportDataset(root, "valid", size=32), batch_size=4)
    return train, valid


def test_a_tiny_real_model_writes_training_descriptions_of_the_present_anatomies(tiny_embedded):
    train, valid = tiny_embedded
    assert valid.reports is not None and len(valid.reports) == len(valid)
    assert rg.true_reports(valid) == valid.reports
    present = valid.present.clone()
    present[0, ANATOMY_NAMES.index("kidney")] = False  # as if the scan stopped above the kidneys
    out = rg.generate_reports(dataclasses.replace(valid, present=present), train)
    bank = rg.description_bank(train)
    for i in range(len(valid)):
        written = [k for k in range(NUM_ANATOMIES) if out.texts[i][k]]
        assert written == present[i].nonzero().flatten().tolist()  # one per present anatomy
        for k in written:
            assert out.texts[i][k] in bank.texts[k]  # only training descriptions of anatomy k
            j = int(out.source[i, k])
            assert (
                train.texts[j][k] == out.texts[i][k] and out.abnormal[i, k] == train.abnormal[j, k]
            )
        assert out.reports[i] == " ".join(out.texts[i][k] for k in written)  # catalog order
    assert out.texts[0][ANATOMY_NAMES.index("kidney")] == ""
    normal = rg.most_common_normal_report(train)
    assert report_labels(normal).sum() == 0  # it asserts no finding
    for k in range(NUM_ANATOMIES):
        pool = [row[k] for i, row in enumerate(train.texts) if row[k] and not train.abnormal[i, k]]
        assert not pool or any(d in normal for d in pool), ANATOMY_NAMES[k]
