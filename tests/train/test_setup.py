"""One answer per question: which model and which data a config means (model_for, dataset_for)."""

from __future__ import annotations

import pytest
from helpers_train import FROZEN_MODEL, make_tiny_data, tiny_config

from cagcl_mini.paths import default_data_dir
from cagcl_mini.phantom.build import default_root
from cagcl_mini.train.config import preset
from cagcl_mini.train.setup import dataset_for, model_for


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("setup_data"))


def test_dataset_and_model_follow_the_config(tiny_data):
    config = tiny_config(tiny_data, None, model=FROZEN_MODEL)
    valid = dataset_for(config, "valid")
    assert len(valid) == 2 and valid.size == 32 and valid.split == "valid"
    assert dataset_for(config, "valid", image_size=16).size == 16
    model, again = model_for(config, seed=3), model_for(config, seed=3)
    assert not model.training and model.config.embed_dim == 32
    assert next(model.visual_proj.parameters()).equal(next(again.visual_proj.parameters()))
    other = model_for(config, seed=4)
    assert not next(model.visual_proj.parameters()).equal(next(other.visual_proj.parameters()))
    trainable = model_for(config, for_training=True)
    assert trainable.training and not trainable.logit_bias.requires_grad  # no sigmoid term
    with pytest.raises(ValueError, match="unknown split 'test'"):
        dataset_for(config, "test")


def test_the_embedded_dataset_is_built_on_demand(monkeypatch, tmp_path):
    monkeypatch.setenv("CAGCL_MINI_DATA", str(tmp_path / "default"))
    config = preset("cpu-quick", n_train=2, n_valid=1, data_size=32, image_size=16)
    valid = dataset_for(config, "valid")
    root = default_root(config.phantom_spec())  # not the tutorial's spec: a folder beside it
    assert len(valid) == 1 and (root / "dataset.json").is_file()
    assert root.parent == default_data_dir().parent and root != default_data_dir()


def test_with_steps_scales_the_warmup_with_the_budget():
    base = preset("cpu-quick")
    assert base.with_steps(None) is base and base.with_steps(base.steps) is base
    longer = base.with_steps(4 * base.steps)
    assert longer.steps == 4 * base.steps and longer.warmup_steps == 4 * base.warmup_steps
    assert base.with_steps(2).warmup_steps >= 1


def test_flat_dict_has_one_level():
    flat = preset("gpu-full").flat_dict()
    assert flat["model.vision"] == "resnet18" and "model" not in flat
    assert flat["steps"] == preset("gpu-full").steps
