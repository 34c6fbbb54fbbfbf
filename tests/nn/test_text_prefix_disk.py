"""The on-disk copy of the shared text prefix states: a new process (here: an emptied memory
store) reads back the states bit for bit instead of running the frozen bottom again."""

from __future__ import annotations

import pytest
import torch

from cagcl_mini.nn import text_cache
from cagcl_mini.nn.text import TextEncoder
from cagcl_mini.nn.text_cache import attach_prefix_cache, clear_shared_prefix_states

TEXTS = ["The lungs are clear.", "The heart is enlarged.", "A 7 mm nodule in the right lung."]


@pytest.fixture(autouse=True)
def _disk_on(tmp_path, monkeypatch):
    monkeypatch.setenv("CAGCL_MINI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(text_cache.DISK_ENV, "1")
    clear_shared_prefix_states()
    yield
    clear_shared_prefix_states()


def fresh_cache(max_length: int = 32) -> text_cache.PrefixCache:
    return attach_prefix_cache(TextEncoder(train_layers=1, max_length=max_length).eval())


def stored(cache: text_cache.PrefixCache) -> dict:
    """The shared store the cache reads (loaded from disk on first use)."""
    return cache._store(cache.split_layer())


def prefix_files() -> list:
    folder = text_cache.prefix_dir()
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


def test_saved_states_come_back_bit_for_bit_in_a_fresh_store():
    first = fresh_cache()
    out = first.encoder(TEXTS)
    assert first.stats["misses"] == 3 and prefix_files() == []
    [path] = text_cache.save_shared_prefix_states()
    assert prefix_files() == [path] and text_cache.save_shared_prefix_states() == []  # clean
    clear_shared_prefix_states()  # as a new process starts

    second = fresh_cache()
    calls = []
    real = second._bottom
    second._bottom = lambda texts, split: calls.append(texts) or real(texts, split)
    again = second.encoder(TEXTS[::-1])
    assert calls == [] and second.stats == {"hits": 3, "misses": 0, "size": 3}
    torch.testing.assert_close(again, out.flip(0), rtol=0, atol=0)
    second.encoder(["The spleen is enlarged."])  # one new string: merged into the file
    text_cache.save_shared_prefix_states()
    clear_shared_prefix_states()
    assert stored(fresh_cache()).keys() >= set(TEXTS) | {"The spleen is enlarged."}


def test_another_max_length_or_disk_off_keeps_its_own_states(monkeypatch):
    fresh_cache(32).encoder(TEXTS)
    fresh_cache(16).encoder(TEXTS)  # truncates differently: another file
    assert len(text_cache.save_shared_prefix_states()) == 2 and len(prefix_files()) == 2
    clear_shared_prefix_states()
    monkeypatch.setenv(text_cache.DISK_ENV, "0")
    cache = fresh_cache(32)
    cache.encoder(TEXTS)
    assert cache.stats["misses"] == 3  # nothing read from disk
    assert text_cache.save_shared_prefix_states() == []


def test_an_unreadable_file_is_recomputed_with_a_warning():
    cache = fresh_cache()
    cache.encoder(TEXTS)
    [path] = text_cache.save_shared_prefix_states()
    path.write_bytes(b"truncated")
    clear_shared_prefix_states()
    again = fresh_cache()
    with pytest.warns(UserWarning, match="unreadable text prefix states"):
        again.encoder(TEXTS)
    assert again.stats["misses"] == 3
    assert text_cache.save_shared_prefix_states() == [path]  # rewritten whole
    clear_shared_prefix_states()
    assert len(stored(fresh_cache())) == 3


def test_the_file_keeps_the_most_recent_strings_under_its_cap(monkeypatch):
    cache = fresh_cache()
    cache.encoder(TEXTS)
    one = max(s.numel() * s.element_size() for s in stored(cache).values())
    monkeypatch.setattr(text_cache, "MAX_DISK_BYTES", 2 * one)
    cache.encoder([TEXTS[0]])  # now the most recently used
    text_cache.save_shared_prefix_states()
    clear_shared_prefix_states()
    kept = list(stored(fresh_cache()))
    assert TEXTS[0] in kept and len(kept) <= 2
