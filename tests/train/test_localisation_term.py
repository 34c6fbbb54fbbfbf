"""The optional localisation term of pretraining: cited report snippets -> axial positions."""

from __future__ import annotations

import math

import pytest
import torch
from helpers_train import FROZEN_MODEL, make_tiny_data, tiny_config

from cagcl_mini.data.citations import mine_pairs, targets_by_volume
from cagcl_mini.data.dataset import collate
from cagcl_mini.losses.objective import LOSS_TERMS, compute_losses
from cagcl_mini.losses.terms import snippet_localisation_loss
from cagcl_mini.train.loop import fit
from cagcl_mini.train.setup import dataset_for, load_model, model_for
from cagcl_mini.train.step import Objective, step_losses

WITH_TERM = {"local": 1.0, "global": 1.0, "localisation": 1.0}


@pytest.fixture(scope="module")
def cited_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("cited_data"), n_train=16)


def test_the_loss_is_the_mean_absolute_error_and_zero_without_citations():
    position = torch.tensor([0.2, 0.5, 0.9], requires_grad=True)
    loss = snippet_localisation_loss(position, torch.tensor([0.3, 0.5, 0.6]))
    assert float(loss.detach()) == pytest.approx((0.1 + 0.0 + 0.3) / 3)
    loss.backward()
    assert position.grad.tolist() == pytest.approx([-1 / 3, 0.0, 1 / 3])
    empty = torch.zeros(0, requires_grad=True)
    zero = snippet_localisation_loss(empty, torch.zeros(0))
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match=r"snippet_position and snippet_target must be \(P,\)"):
        snippet_localisation_loss(torch.zeros(2), torch.zeros(3))
    assert "localisation" in LOSS_TERMS
    with pytest.raises(KeyError, match="needs input 'snippet_target'"):
        compute_losses({"localisation": 1.0}, {"snippet_position": torch.zeros(1)})


def test_the_objective_reads_the_training_splits_citations(cited_data):
    config = tiny_config(cited_data, None, model=FROZEN_MODEL, loss_preset=WITH_TERM)
    dataset = dataset_for(config, "train")
    pairs = mine_pairs(dataset)
    assert len(pairs) >= 2, "the tiny phantom should cite a few slices"
    objective = Objective.of(config, dataset)
    assert objective.citations == targets_by_volume(pairs)
    ids = list(objective.citations)[:2] + ["no_such_volume"]
    rows, snippets, targets = objective.snippets(ids)
    expected = [(r, s, t) for r, v in enumerate(ids) for s, t in objective.citations.get(v, ())]
    assert rows.tolist() == [r for r, _, _ in expected]
    assert snippets == [s for _, s, _ in expected]
    assert targets.tolist() == pytest.approx([t for _, _, t in expected])
    assert all("series" not in s and "image" not in s for s in snippets)  # citations stripped
    assert Objective.of(config.replace(loss_preset="cagcl")).snippets(ids) is None
    with pytest.raises(ValueError, match="needs the training split's citations"):
        Objective.of(config)


def test_a_split_without_citations_is_a_one_line_error(cited_data, tmp_path):
    config = tiny_config(cited_data, None, model=FROZEN_MODEL, loss_preset=WITH_TERM)
    dataset = dataset_for(config, "train")
    dataset.records = [r for r in dataset.records if r.id not in targets_by_volume(
        mine_pairs(dataset))]  # fmt: skip
    with pytest.raises(ValueError, match=r"no slice citations .* train reports"):
        Objective.of(config, dataset)


def test_the_term_trains_the_head_and_the_image_tower(cited_data):
    config = tiny_config(cited_data, None, model=FROZEN_MODEL, loss_preset=WITH_TERM)
    dataset = dataset_for(config, "train")
    objective = Objective.of(config, dataset)
    cited = [i for i, vid in enumerate(dataset.ids) if vid in objective.citations]
    batch = collate([dataset[i] for i in cited[:2] + [j for j in range(4) if j not in cited][:2]])
    model = model_for(config, for_training=True)
    assert model.localisation_head is not None
    losses = step_losses(model, batch, objective)
    assert set(losses) == {"local", "global", "localisation", "total"}
    assert 0.0 < float(losses["localisation"].detach()) < 1.0
    assert math.isfinite(float(losses["total"].detach()))
    losses["localisation"].backward()
    head_grad = sum(p.grad.abs().sum() for p in model.localisation_head.parameters())
    vision_grad = sum(p.grad.abs().sum() for p in model.vision.parameters() if p.grad is not None)
    assert head_grad > 0 and vision_grad > 0
    # a batch without a cited snippet: the term is an exact 0 that still reaches the head
    model.zero_grad(set_to_none=True)
    uncited = [i for i in range(len(dataset)) if i not in cited][:2]
    losses = step_losses(model, collate([dataset[i] for i in uncited]), objective)
    assert float(losses["localisation"].detach()) == 0.0
    losses["total"].backward()
    assert all(p.grad is not None for p in model.localisation_head.parameters())


def test_a_run_with_the_term_checkpoints_and_reloads_its_head(cited_data, tmp_path):
    config = tiny_config(
        cited_data, tmp_path / "run", steps=2, checkpoint_every=0, model=FROZEN_MODEL,
        loss_preset=WITH_TERM,
    )  # fmt: skip
    result = fit(config)
    model, loaded = load_model(result.checkpoint)
    assert loaded.loss_weights() == WITH_TERM and model.config.localisation_head
    assert model.localisation_head is not None
    with pytest.raises(ValueError, match="no localisation head"):
        model_for(config.replace(loss_preset="cagcl")).locate_snippets(
            torch.zeros(1, 8, 2, 2, 2), torch.zeros(1, dtype=torch.long), ["a"]
        )
