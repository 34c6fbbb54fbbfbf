"""CA-GCL text augmentation: whole sentences are moved or dropped, never invented or altered."""

from __future__ import annotations

from collections import Counter
from itertools import permutations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cagcl_mini.anatomy import ANATOMIES
from cagcl_mini.text.augment import (
    as_generator,
    augment_batch_texts,
    augment_sentences,
    augment_text,
    join_sentences,
    keep_subset,
    partial_completeness,
    permute_sentences,
)
from cagcl_mini.text.reports import split_sentences

# Words that never end a sentence-final abbreviation ("vs.", "no." ...), so "<words>." always splits.
WORDS = (
    "lungs clear heart normal size aorta calibre liver density spleen kidney cyst nodule "
    "effusion pleural mild small right left upper lobe seen noted measuring"
).split()
CATALOG_SENTENCES = sorted({s for a in ANATOMIES for s in a.normal_phrasings})


def _sentence(words: list[str]) -> str:
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


sentences_st = st.lists(
    st.one_of(
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=7).map(_sentence),
        st.sampled_from(CATALOG_SENTENCES),
    ),
    min_size=1,
    max_size=8,
)
DESCRIPTION = (
    "The lungs are clear. No pleural effusion is seen. A 4 mm nodule is noted in the right "
    "upper lobe. The airways are patent. There is no consolidation."
)


def _is_sub_multiset(part: list[str], whole: list[str]) -> bool:
    return not Counter(part) - Counter(whole)


def _is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(any(p == w for w in it) for p in part)


def test_catalog_sentences_split_as_one():
    """The generators' premise: each generated sentence is one sentence for the splitter."""
    for s in CATALOG_SENTENCES:
        assert split_sentences(s) == [s]
    assert len(split_sentences(DESCRIPTION)) == 5


@settings(max_examples=60, deadline=None)
@given(sentences=sentences_st, seed=st.integers(0, 2**32 - 1))
def test_permutation_keeps_the_multiset(sentences, seed):
    text = " ".join(sentences)
    out = split_sentences(permute_sentences(text, seed))
    assert Counter(out) == Counter(split_sentences(text))


@settings(max_examples=60, deadline=None)
@given(
    sentences=sentences_st,
    seed=st.integers(0, 2**32 - 1),
    keep_prob=st.floats(0.01, 1.0),
)
def test_partial_completeness_keeps_an_ordered_non_empty_subset(sentences, seed, keep_prob):
    text = " ".join(sentences)
    original = split_sentences(text)
    out = split_sentences(partial_completeness(text, seed, keep_prob))
    assert 1 <= len(out) <= len(original)
    assert _is_subsequence(out, original)


@settings(max_examples=60, deadline=None)
@given(
    sentences=sentences_st,
    seed=st.integers(0, 2**32 - 1),
    p_permute=st.floats(0.0, 1.0),
    p_partial=st.floats(0.0, 1.0),
    keep_prob=st.floats(0.01, 1.0),
)
def test_augment_text_never_invents_or_alters_a_sentence(
    sentences, seed, p_permute, p_partial, keep_prob
):
    text = " ".join(sentences)
    out_text = augment_text(text, seed, p_permute, p_partial, keep_prob)
    out = split_sentences(out_text)
    assert out, "at least one sentence survives"
    assert _is_sub_multiset(out, split_sentences(text))
    assert out_text == augment_text(text, seed, p_permute, p_partial, keep_prob)


def test_same_seed_same_output_and_generators_advance():
    assert augment_text(DESCRIPTION, 7, 1.0, 1.0) == augment_text(DESCRIPTION, 7, 1.0, 1.0)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    run_a = [augment_text(DESCRIPTION, a, 1.0, 1.0) for _ in range(20)]
    run_b = [augment_text(DESCRIPTION, b, 1.0, 1.0) for _ in range(20)]
    assert run_a == run_b
    assert len(set(run_a)) > 5, "one generator gives a new draw per call"


def test_different_seeds_differ_over_many_draws():
    perms = {permute_sentences(DESCRIPTION, seed) for seed in range(60)}
    partials = {partial_completeness(DESCRIPTION, seed) for seed in range(60)}
    assert len(perms) > 20  # 120 orders are possible
    assert len(partials) > 8  # 31 non-empty subsets are possible


def test_permutation_is_uniform_over_orders():
    sentences = ["A one.", "B two.", "C three."]
    gen = np.random.default_rng(0)
    counts = Counter(
        tuple(split_sentences(permute_sentences(" ".join(sentences), gen))) for _ in range(6000)
    )
    assert set(counts) == set(permutations(sentences))
    assert all(850 < c < 1150 for c in counts.values()), counts  # 1000 expected, sd ~29


def test_partial_keeps_each_sentence_with_keep_prob():
    sentences = [f"Finding {w}." for w in WORDS[:10]]
    gen = np.random.default_rng(1)
    kept = [len(keep_subset(sentences, gen, keep_prob=0.4)) for _ in range(4000)]
    # E = 10*0.4 (+ the tiny all-dropped correction 0.6**10); sd of the mean ~0.025
    assert abs(np.mean(kept) - 4.0) < 0.1
    assert min(kept) == 1


def test_single_sentence_and_empty_text():
    one = "The heart is normal in size."
    for seed in range(5):
        assert permute_sentences(one, seed) == one
        assert partial_completeness(one, seed, keep_prob=0.01) == one
        assert augment_text(one, seed, 1.0, 1.0, 0.01) == one
    for empty in ("", "   ", "\n"):
        assert permute_sentences(empty, 0) == ""
        assert partial_completeness(empty, 0) == ""
        assert augment_text(empty, 0, 1.0, 1.0) == ""


def test_probabilities_zero_and_one():
    sentences = split_sentences(DESCRIPTION)
    assert augment_text(DESCRIPTION, 0, p_permute=0.0, p_partial=0.0) == DESCRIPTION
    assert partial_completeness(DESCRIPTION, 0, keep_prob=1.0) == DESCRIPTION
    thinned = [augment_sentences(sentences, s, 0.0, 1.0, 0.3) for s in range(30)]
    assert all(_is_subsequence(t, sentences) for t in thinned)
    assert any(len(t) < len(sentences) for t in thinned)


def test_unpunctuated_phrases_round_trip():
    text = "lungs clear, no effusion, heart normal size"
    phrases = split_sentences(text)
    assert len(phrases) == 3
    outs = {permute_sentences(text, seed) for seed in range(30)}
    assert len(outs) > 1
    for out in outs:
        assert Counter(split_sentences(out)) == Counter(phrases)
    assert join_sentences(phrases) == text


def test_batch_keeps_shape_and_absent_texts():
    texts = [[DESCRIPTION, "", "The aorta is normal."], ["", "Liver is fatty. Spleen normal.", ""]]
    out = augment_batch_texts(texts, 11, p_permute=1.0, p_partial=1.0)
    assert [len(r) for r in out] == [3, 3]
    for row_in, row_out in zip(texts, out, strict=True):
        for t_in, t_out in zip(row_in, row_out, strict=True):
            assert (t_out == "") == (t_in == "")
            if t_in:
                assert _is_sub_multiset(split_sentences(t_out), split_sentences(t_in))
    assert out == augment_batch_texts(texts, 11, p_permute=1.0, p_partial=1.0)
    assert texts[0][0] == DESCRIPTION, "input is not modified"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="keep_prob"):
        partial_completeness(DESCRIPTION, 0, keep_prob=0.0)
    with pytest.raises(ValueError, match="p_permute"):
        augment_text(DESCRIPTION, 0, p_permute=1.5)
    with pytest.raises(TypeError, match="rng"):
        augment_text(DESCRIPTION, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]\[0\]"):
        augment_batch_texts([["a."], [None]], 0)  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        augment_batch_texts(["not a list"], 0)  # type: ignore[list-item]
    assert as_generator(np.int64(3)).integers(100) == np.random.default_rng(3).integers(100)
