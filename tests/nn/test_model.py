"""Vision encoders, the bundled MiniLM text encoder, its cache, and the AnatomyCLIP model."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from cagcl_mini.anatomy import ANATOMIES, NUM_ANATOMIES
from cagcl_mini.nn.model import AnatomyCLIP, ModelConfig, ProjectionHead
from cagcl_mini.nn.text import TextEncoder, bucket_by_length, default_text_model_path
from cagcl_mini.nn.vision import build_vision_encoder

SIZE = 32  # 32^3 volumes keep every test fast; the tiny encoder maps them to 4^3


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    """The bundled MiniLM, frozen, mean pooling, cache off (shared read-only by several tests)."""
    return TextEncoder(pooling="mean", train_layers=0, use_cache=False)


@pytest.fixture(scope="module")
def model() -> AnatomyCLIP:
    torch.manual_seed(0)
    return AnatomyCLIP(ModelConfig(vision="tiny", embed_dim=32, text_cache=False)).eval()


def make_batch(labels_per_sample: list[list[int]], seed: int = 0) -> dict:
    """Images of noise and anatomy maps holding exactly the listed anatomy ids, one slab each."""
    g = torch.Generator().manual_seed(seed)
    b = len(labels_per_sample)
    anatomy = torch.zeros(b, SIZE, SIZE, SIZE, dtype=torch.long)
    for i, labels in enumerate(labels_per_sample):
        for j, label in enumerate(labels):
            anatomy[i, 4 * j : 4 * j + 3, 4:28, 4:28] = label
    texts = [
        [f"description of {ANATOMIES[k].name} {i}" if k + 1 in labels else "" for k in range(8)]
        for i, labels in enumerate(labels_per_sample)
    ]
    return {
        "image": torch.randn(b, 1, SIZE, SIZE, SIZE, generator=g),
        "anatomy": anatomy,
        "texts": texts,
    }


# ---------------------------------------------------------------------------- vision encoders
def test_tiny_encoder_shape_channels_and_stride():
    enc = build_vision_encoder("tiny")
    out = enc(torch.randn(2, 1, SIZE, SIZE, SIZE))
    assert out.shape == (2, enc.out_channels, SIZE // 8, SIZE // 8, SIZE // 8)
    assert enc.output_stride == 8
    n_params = sum(p.numel() for p in enc.parameters())
    assert 100_000 < n_params < 1_000_000


def test_tiny_fine_encoder_keeps_a_finer_feature_grid():
    coarse, fine = build_vision_encoder("tiny"), build_vision_encoder("tiny-fine")
    assert fine.output_stride == 6 and fine.out_channels == coarse.out_channels
    assert fine(torch.randn(2, 1, 48, 48, 48)).shape == (2, 64, 8, 8, 8)
    assert coarse(torch.randn(2, 1, 48, 48, 48)).shape == (2, 64, 6, 6, 6)
    # the same layers apart from the stem's kernel: 3^3 instead of 4^3 per input channel
    stem_difference = (4**3 - 3**3) * 3 * 16
    n_params = [sum(p.numel() for p in enc.parameters()) for enc in (coarse, fine)]
    assert n_params[0] - n_params[1] == stem_difference


def test_tiny_encoder_accepts_overrides():
    enc = build_vision_encoder("tiny", channels=(8, 16), strides=(2, 2), norm="batch")
    assert enc(torch.randn(2, 1, 16, 16, 16)).shape == (2, 16, 4, 4, 4)
    with pytest.raises(ValueError, match="one stride per stage"):
        build_vision_encoder("tiny", channels=(8, 16), strides=(2,))


def test_resnet18_preset_runs_on_cpu():
    enc = build_vision_encoder("resnet18")
    with torch.no_grad():
        out = enc(torch.randn(1, 1, SIZE, SIZE, SIZE))
    assert enc.out_channels == 256 and enc.output_stride == 16
    assert out.shape == (1, 256, 2, 2, 2)
    assert torch.isfinite(out).all()
    deep = build_vision_encoder("resnet18", stage=4)
    assert deep.out_channels == 512 and len(deep.stages) == 4 and len(enc.stages) == 3


def test_unknown_vision_encoder_names_choices():
    with pytest.raises(ValueError, match="tiny"):
        build_vision_encoder("vit-huge")


# ---------------------------------------------------------------------------- text encoder
def test_bundled_minilm_loads_offline(minilm):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest: no download can hide here
    assert (default_text_model_path() / "model.safetensors").is_file()
    assert minilm.name_or_path == str(default_text_model_path())
    assert minilm.hidden_size == 384 and minilm.num_layers == 6


def test_minilm_embedding_is_semantic(minilm):
    e = F.normalize(
        minilm(["The heart is enlarged.", "Cardiomegaly is present.", "The kidneys have no cyst."]),
        dim=-1,
    )
    close, far = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert close > far + 0.1, (close, far)


def test_mean_pooling_matches_direct_transformers(minilm):
    from transformers import AutoModel, AutoTokenizer

    path = default_text_model_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ref_model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    texts = ["The lungs are clear.", "A 6 mm nodule is seen in the left lung.", ""]
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1)
    got = minilm(texts)
    assert got.shape == (3, 384)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_cls_pooling_takes_first_token(minilm):
    enc = minilm.tokenize(["The aorta is normal in diameter."])
    with torch.no_grad():
        hidden = minilm.model(**enc).last_hidden_state
    cls = TextEncoder(pooling="cls", use_cache=False)
    torch.testing.assert_close(cls(["The aorta is normal in diameter."]), hidden[:, 0])


def test_encoding_runs_length_groups_and_keeps_the_order(minilm, monkeypatch):
    long = "Patchy ground-glass opacities in both lower lobes with septal thickening. " * 4
    texts = ["Normal.", long, "The heart is enlarged.", long[:120], "Clear lungs.", long[:60]]
    alone = torch.cat([minilm([t]) for t in texts])  # one string per call: no padding at all
    widths = []
    forward = minilm.model.forward
    monkeypatch.setattr(
        minilm.model,
        "forward",
        lambda **enc: widths.append(enc["input_ids"].shape) or forward(**enc),
    )
    together = minilm(texts)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)  # rows in input order
    counts = minilm.token_counts(texts)
    groups = bucket_by_length(counts)
    assert len(groups) > 1 and all(max(counts[i] for i in g) < 10 for g in groups[:1])
    assert widths == [(len(g), max(counts[i] for i in g)) for g in groups]  # each its own pad
    assert sum(n * w for n, w in widths) < len(texts) * max(counts)  # less than one padded batch
    minilm.batch_size = 1  # the cap on strings per call still holds
    widths.clear()
    minilm(texts)
    assert len(widths) == len(texts)


def test_frozen_encoder_has_no_trainable_weights_and_stays_in_eval(minilm):
    assert not any(p.requires_grad for p in minilm.model.parameters())
    minilm.train()
    assert minilm.training and not minilm.model.training  # no dropout on a frozen encoder
    minilm.eval()


def test_train_layers_unfreezes_exactly_the_last_layers():
    enc = TextEncoder(train_layers=2, use_cache=True)
    trainable = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    expected = {
        n
        for n, _ in enc.model.named_parameters()
        if n.startswith(("encoder.layer.4.", "encoder.layer.5."))
    }
    assert trainable == expected and expected
    assert not enc.cache_active  # a training encoder never serves cached vectors
    enc.train()
    assert enc.model.training
    enc.set_train_layers(-1)
    assert all(p.requires_grad for p in enc.model.parameters())
    enc.set_train_layers(0)
    assert enc.frozen and enc.cache_active
    with pytest.raises(ValueError, match="train_layers"):
        enc.set_train_layers(7)


def test_trainable_text_layers_receive_gradients():
    enc = TextEncoder(train_layers=1, use_cache=True)
    enc(["The spleen is enlarged.", "The liver is normal."]).pow(2).sum().backward()
    assert enc.model.encoder.layer[5].output.dense.weight.grad.abs().sum() > 0
    assert enc.model.encoder.layer[4].output.dense.weight.grad is None
    assert enc.cache_stats["misses"] == 0  # no caching while training


def test_cache_matches_reencoding_and_counts_hits(minilm):
    texts = ["The heart size is normal.", "The spleen is enlarged.", "The heart size is normal."]
    cached = TextEncoder(use_cache=True)
    first = cached(texts)
    assert cached.cache_stats == {"hits": 1, "misses": 2, "size": 2}
    second = cached(texts[::-1])
    assert cached.cache_stats == {"hits": 4, "misses": 2, "size": 2}
    torch.testing.assert_close(second, first.flip(0))
    torch.testing.assert_close(first, minilm(texts), atol=1e-5, rtol=1e-5)
    cached.use_cache = False
    cached(texts)
    assert cached.cache_stats["hits"] == 4  # switched off: counters untouched


def test_cache_evicts_least_recently_used():
    enc = TextEncoder(use_cache=True, cache_size=2)
    enc(["a", "b"])
    enc(["a"])  # "a" is now the most recent
    enc(["c"])
    assert set(enc._cache) == {"a", "c"}


# ---------------------------------------------------------------------------- the model
@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_encode_image_shapes_norms_and_presence(pooling):
    torch.manual_seed(0)
    m = AnatomyCLIP(ModelConfig(embed_dim=32, pooling=pooling, text_cache=False))
    batch = make_batch([[1, 3, 5], [2], []])
    v, present = m.encode_image(batch)
    assert v.shape == (3, NUM_ANATOMIES, 32) and present.shape == (3, NUM_ANATOMIES)
    expected = torch.zeros(3, NUM_ANATOMIES, dtype=torch.bool)
    expected[0, [0, 2, 4]] = True
    expected[1, 1] = True
    assert torch.equal(present, expected)
    norms = v.norm(dim=-1)
    torch.testing.assert_close(norms[present], torch.ones(int(present.sum())))
    assert torch.equal(v[~present], torch.zeros_like(v[~present]))
    assert torch.isfinite(v).all()


def test_encode_text_normalised_and_empty_string_finite(model):
    e = model.encode_text(["The lungs are clear.", ""])
    assert e.shape == (2, 32) and torch.isfinite(e).all()
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(2))


def test_encode_batch_texts_dedupes_and_zeros_empty(model, monkeypatch):
    seen: list[str] = []
    original = model.text_encoder.forward

    def counting(texts):
        seen.extend(texts)
        return original(texts)

    monkeypatch.setattr(model.text_encoder, "forward", counting)
    texts = [
        ["The lungs are clear.", "", "Cardiomegaly is present."],
        ["The lungs are clear.", "x", ""],
    ]
    out = model.encode_batch_texts(texts)
    assert sorted(seen) == sorted(["The lungs are clear.", "Cardiomegaly is present.", "x"])
    assert out.shape == (2, 3, 32)
    torch.testing.assert_close(out[0, 0], out[1, 0])
    assert torch.equal(out[0, 1], torch.zeros(32)) and torch.equal(out[1, 2], torch.zeros(32))
    torch.testing.assert_close(out[0, 2], model.encode_text(["Cardiomegaly is present."])[0])
    with pytest.raises(ValueError, match="rows \\[1\\]"):
        model.encode_batch_texts([["a", "b"], ["a"]])


def test_anatomy_prompts_embed_each_catalog_anatomy(model):
    prompts = model.anatomy_prompt_embeddings()
    assert prompts.shape == (NUM_ANATOMIES, 32)
    torch.testing.assert_close(prompts[1], model.encode_text([ANATOMIES[1].prompt])[0])


def test_model_text_cache_serves_projection_gradients():
    m = AnatomyCLIP(ModelConfig(embed_dim=16))
    texts = ["The lungs are clear.", "The liver density is normal."]
    fresh = m.encode_text(texts)
    again = m.encode_text(texts)
    assert m.text_cache_stats["hits"] == 2 and m.text_cache_stats["misses"] == 2
    torch.testing.assert_close(again, fresh)
    again.sum().backward()
    assert m.text_proj.net.weight.grad.abs().sum() > 0
    m.set_text_cache(False)
    m.encode_text(texts)
    assert m.text_cache_stats == {"hits": 0, "misses": 0, "size": 0}


def test_gradients_reach_vision_and_both_projections():
    torch.manual_seed(0)
    m = AnatomyCLIP(ModelConfig(embed_dim=16)).train()
    out = m(make_batch([[1, 2], [1, 3]]), with_prompts=True)
    both = out["present"]
    logits = out["logit_scale"].exp() * (out["v"][both] @ out["t"][both].T)
    loss = F.cross_entropy(logits, torch.arange(logits.shape[0])) + out["anatomy_text"].sum() * 0
    loss.backward()
    for name, module in [
        ("vision", m.vision),
        ("visual_proj", m.visual_proj),
        ("text_proj", m.text_proj),
    ]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert m.logit_scale.grad is not None
    assert all(p.grad is None for p in m.text_encoder.model.parameters())


def test_logit_scale_and_bias():
    m = AnatomyCLIP(ModelConfig(embed_dim=16, logit_bias_init=0.0))
    assert math.isclose(m.scale().item(), 1 / 0.07, rel_tol=1e-5)
    assert m.logit_bias.item() == 0.0
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    assert math.isclose(m.scale().item(), 100.0, rel_tol=1e-5)
    assert AnatomyCLIP(ModelConfig(embed_dim=16)).logit_bias.item() == -10.0


def test_state_dict_roundtrip_weights_only(tmp_path, model):
    cfg = ModelConfig(vision="tiny", embed_dim=32, pooling="attention", projection="mlp")
    torch.manual_seed(1)
    src = AnatomyCLIP(cfg).eval()
    torch.save({"config": cfg.to_dict(), "model": src.state_dict()}, tmp_path / "full.pt")
    torch.save(
        {"config": cfg.to_dict(), "model": src.checkpoint_state_dict()}, tmp_path / "small.pt"
    )
    small = torch.load(tmp_path / "small.pt", weights_only=True)
    assert not any(k.startswith("text_encoder.model.") for k in small["model"])
    assert (tmp_path / "small.pt").stat().st_size < (tmp_path / "full.pt").stat().st_size / 20
    batch = make_batch([[1, 4], [2, 8]])
    for name in ("full.pt", "small.pt"):
        ckpt = torch.load(tmp_path / name, weights_only=True)
        torch.manual_seed(2)
        dst = AnatomyCLIP(ModelConfig.from_dict(ckpt["config"])).eval()
        if name == "full.pt":
            dst.load_state_dict(ckpt["model"])
        else:
            dst.load_checkpoint_state_dict(ckpt["model"])
        with torch.no_grad():
            torch.testing.assert_close(dst.encode_image(batch)[0], src.encode_image(batch)[0])
            torch.testing.assert_close(dst.encode_text(["a b c"]), src.encode_text(["a b c"]))
    with pytest.raises(KeyError, match="visual_proj"):
        dst.load_checkpoint_state_dict(
            {k: v for k, v in small["model"].items() if "visual_proj" not in k}
        )
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_bad_batch_is_reported(model):
    batch = make_batch([[1]])
    with pytest.raises(ValueError, match="batch\\['anatomy'\\]"):
        model.encode_image({**batch, "anatomy": batch["anatomy"][:, :-1]})
    with pytest.raises(KeyError, match="'image'"):
        model.encode_image({"anatomy": batch["anatomy"]})
    with pytest.raises(ValueError, match="pooling"):
        AnatomyCLIP(ModelConfig(pooling="max"))


def test_projection_head_kinds():
    assert ProjectionHead(8, 4, "mlp")(torch.randn(3, 8)).shape == (3, 4)
    with pytest.raises(ValueError, match="projection"):
        ProjectionHead(8, 4, "conv")
