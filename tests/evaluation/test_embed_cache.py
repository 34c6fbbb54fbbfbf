"""The on-disk embedding cache: a hit equals a fresh embedding, and anything that changes the
answer (weights, a data file, a CSV, the batch size) misses."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.evaluation import embed, embed_cache
from cagcl_mini.nn.model import AnatomyCLIP, ModelConfig
from cagcl_mini.phantom.build import make_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed_cache") / "phantom"
    return make_dataset(root, n_train=4, n_valid=6, size=32, seed=0, workers=1, progress=False)


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch):
    """A fresh cache root per test: the file counts below are this test's own."""
    monkeypatch.setenv("CAGCL_MINI_HOME", str(tmp_path / "home"))


def tiny_model(seed: int = 0) -> AnatomyCLIP:
    torch.manual_seed(seed)
    return AnatomyCLIP(ModelConfig(vision="tiny", embed_dim=16))


def assert_same_split(a: embed.EmbeddedSplit, b: embed.EmbeddedSplit) -> None:
    for key in embed_cache.TENSOR_FIELDS:
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert (a.ids, a.texts, a.reports, a.scale, a.name) == (
        b.ids,
        b.texts,
        b.reports,
        b.scale,
        b.name,
    )


def cached_files() -> list:
    folder = embed_cache.cache_dir()
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


def test_a_hit_returns_the_stored_split_without_running_the_model(tiny_data, monkeypatch):
    valid = CTReportDataset(tiny_data, "valid", size=32)
    model = tiny_model()
    fresh = embed.embed_dataset(model, valid, batch_size=4)
    first = embed.embed_dataset(model, valid, batch_size=4, cache=True)
    assert_same_split(first, fresh)
    assert len(cached_files()) == 1 and cached_files()[0].name.startswith("valid-")

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran although the split was cached")

    monkeypatch.setattr(embed, "_embed", refuse)
    again = embed.embed_dataset(tiny_model(), valid, batch_size=4, cache=True)  # same weights
    assert_same_split(again, fresh)
    with pytest.raises(AssertionError, match="the model ran"):
        embed.embed_dataset(model, valid, batch_size=4)  # cache=False always embeds


def test_other_weights_batch_size_or_split_miss(tiny_data):
    valid = CTReportDataset(tiny_data, "valid", size=32)
    train = CTReportDataset(tiny_data, "train", size=32)
    model = tiny_model()
    key = embed_cache.cache_path(model, valid, 4)
    assert embed_cache.cache_path(tiny_model(), valid, 4) == key
    assert embed_cache.cache_path(tiny_model(seed=1), valid, 4) != key
    assert embed_cache.cache_path(model, valid, 2) != key
    assert embed_cache.cache_path(model, train, 4) != key
    assert embed_cache.cache_path(model, CTReportDataset(tiny_data, "valid", size=24), 4) != key
    with torch.no_grad():
        model.logit_scale.add_(0.5)  # one scalar changed
    assert embed_cache.cache_path(model, valid, 4) != key
    assert embed.embed_dataset(model, valid, batch_size=4, cache=True).scale == pytest.approx(
        embed.model_scale(model)
    )


def test_a_changed_volume_or_report_changes_the_key(tiny_data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    model = tiny_model()
    key = embed_cache.cache_path(model, CTReportDataset(copy, "valid", size=32), 4)
    assert key == embed_cache.cache_path(model, CTReportDataset(copy, "valid", size=32), 4)
    volume = CTReportDataset(copy, "valid", size=32).records[0].image
    stat = volume.stat()
    os.utime(volume, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a rewritten file
    touched = embed_cache.cache_path(model, CTReportDataset(copy, "valid", size=32), 4)
    assert touched != key
    reports = next(copy.rglob("validation_reports.csv"))
    reports.write_text(reports.read_text().replace("heart", "Heart", 1))
    assert embed_cache.cache_path(model, CTReportDataset(copy, "valid", size=32), 4) != touched


def test_a_user_transform_is_never_cached(tiny_data):
    valid = CTReportDataset(tiny_data, "valid", size=32, transform=lambda item: item)
    assert valid.fingerprint() is None
    assert embed_cache.cache_path(tiny_model(), valid, 4) is None
    embed.embed_dataset(tiny_model(), valid, batch_size=4, cache=True)
    assert cached_files() == []


def test_an_unreadable_file_is_recomputed_with_a_warning(tiny_data):
    valid = CTReportDataset(tiny_data, "valid", size=32)
    model = tiny_model(seed=3)
    path = embed_cache.cache_path(model, valid, 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable cached embeddings"):
        split = embed.embed_dataset(model, valid, batch_size=4, cache=True)
    assert_same_split(split, embed.embed_dataset(model, valid, batch_size=4))
    assert embed_cache.load_fields(path) is not None  # rewritten whole
    assert not list(path.parent.glob(".*"))  # no temporary left behind


def test_only_the_newest_files_are_kept(tiny_data, monkeypatch):
    monkeypatch.setattr(embed_cache, "MAX_FILES", 2)
    folder = embed_cache.cache_dir()
    shutil.rmtree(folder, ignore_errors=True)
    valid = CTReportDataset(tiny_data, "valid", size=32)
    paths = []
    for seed in (10, 11, 12):
        model = tiny_model(seed)
        embed.embed_dataset(model, valid, batch_size=4, cache=True)
        paths.append(embed_cache.cache_path(model, valid, 4))
        stamp = 1_000_000_000 + seed  # distinct mtimes, oldest first
        os.utime(paths[-1], (stamp, stamp))
    assert {p.name for p in cached_files()} == {p.name for p in paths[1:]}
