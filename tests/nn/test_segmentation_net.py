"""The segmentation network: logits at the input's cube, skips read from the encoder's stages."""

from __future__ import annotations

import pytest
import torch

from cagcl_mini.nn.segmentation import SegmentationNet, encoder_skips
from cagcl_mini.nn.vision import build_vision_encoder


def test_output_has_the_input_cube_for_the_tiny_preset():
    torch.manual_seed(0)
    net = SegmentationNet(build_vision_encoder("tiny"), out_channels=2)
    image = torch.rand(2, 1, 48, 48, 48)
    out = net(image)
    assert out.shape == (2, 2, 48, 48, 48)
    assert torch.isfinite(out).all()
    assert [(c, s) for _, c, s in net.skips] == [(32, 4), (64, 8)]


def test_every_resolution_of_a_deeper_encoder_becomes_a_skip():
    encoder = build_vision_encoder("tiny", channels=(8, 16, 24, 32), strides=(2, 2, 1, 2))
    net = SegmentationNet(encoder, out_channels=3)
    # stage 2 (stride 1) replaces stage 1 as the skip at stride 4
    assert [(i, c, s) for i, c, s in net.skips] == [(0, 8, 2), (2, 24, 4), (3, 32, 8)]
    assert len(net.up) == 2
    assert net(torch.rand(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_reading_the_skips_leaves_batch_norm_statistics_and_mode_alone():
    encoder = build_vision_encoder("tiny").train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    encoder_skips(encoder)
    assert encoder.training
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_cube_the_encoder_cannot_divide_is_refused_in_one_line():
    net = SegmentationNet(build_vision_encoder("tiny"))
    with pytest.raises(ValueError, match=r"multiples of 8, got shape \(1, 1, 44, 48, 48\)") as e:
        net(torch.rand(1, 1, 44, 48, 48))
    assert "\n" not in str(e.value)


def test_a_resnet_trunk_is_refused_by_name():
    with pytest.raises(TypeError, match="needs a TinyEncoder .* got ResNetTrunk"):
        SegmentationNet(build_vision_encoder("resnet10"))
