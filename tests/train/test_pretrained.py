"""MedicalNet weights for the ResNet trunks: never downloaded, loaded from a local file."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets.resnet import ResNetFeatures

from cagcl_mini.nn.model import AnatomyCLIP
from cagcl_mini.nn.vision import ResNetTrunk
from cagcl_mini.train.config import TrainConfig


def test_pretrained_true_says_how_to_get_the_weights_instead_of_downloading():
    with pytest.raises(ValueError) as err:
        ResNetTrunk("resnet10", pretrained=True)
    message = str(err.value)
    assert "\n" not in message and "downloads nothing" in message
    assert "https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet10" in message
    assert "resnet_10.pth" in message and "model.vision_kwargs.pretrained_path" in message


def test_a_local_medicalnet_file_loads_into_the_trunk(tmp_path):
    torch.manual_seed(7)
    source = ResNetFeatures("resnet10", pretrained=False, spatial_dims=3, in_channels=1)
    # the MedicalNet layout: {"state_dict": ...} with DataParallel's "module." prefixes
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    config = TrainConfig().with_overrides(
        ["model.vision=resnet10", f"model.vision_kwargs={{pretrained_path: {path}}}"]
    )
    model = AnatomyCLIP(config.model_config())
    trunk = model.vision
    assert torch.equal(trunk.stem[0].weight, source.conv1.weight)
    assert torch.equal(trunk.stages[0][0].conv1.weight, source.layer1[0].conv1.weight)
    fresh = ResNetTrunk("resnet10")  # without the file: a random initialisation
    assert not torch.equal(fresh.stem[0].weight, source.conv1.weight)


def test_a_wrong_or_missing_weights_file_is_one_line_naming_it(tmp_path):
    other = ResNetFeatures("resnet10", pretrained=False, spatial_dims=3, in_channels=2)
    path = tmp_path / "two_channels.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match=r"two_channels\.pth: conv1\.weight has shape "
                       r"\(64, 2, 7, 7, 7\) in the file but \(64, 1, 7, 7, 7\)"):  # fmt: skip
        ResNetTrunk("resnet10", pretrained_path=path)
    with pytest.raises(FileNotFoundError, match=r"pretrained_path .*absent\.pth does not exist"):
        ResNetTrunk("resnet10", pretrained_path=tmp_path / "absent.pth")
