"""3D vision encoders built from MONAI networks: CT volume (B,1,H,W,D) -> feature map (B,C,h,w,d).

Mask pooling needs a spatial feature map, not a global vector, so every encoder here stops before
any global pooling. Two families:

- ``"tiny"``: a few MONAI ``Convolution`` / ``ResidualUnit`` blocks for a laptop CPU. Three HU
  windows as input channels, a 4x4x4 patchify stem, a residual unit at stride 4 and a strided
  residual unit with batch norm give an 8x downsampled map (48^3 -> 6^3, 64 channels).
  ``"tiny-fine"`` is the same network with a 3x3x3 stem: a 16^3 first stage and an 8^3 map at
  48^3, for about 2.3x the multiply-adds (the README's *The encoder's shape at the best
  optimiser*).
- ``"resnet10"`` / ``"resnet18"`` / ``"resnet34"`` / ``"resnet50"``: the trunk of MONAI's 3D
  ``ResNetFeatures`` (MedicalNet layout) for a GPU. By default the trunk stops after ``layer3``
  (output stride 16: 128^3 -> 8^3) because stride 32 leaves small anatomies (esophagus, trachea)
  almost no feature voxels; ``stage=4`` keeps ``layer4``. Nothing is downloaded: MedicalNet
  weights load from a local file, ``pretrained_path`` (``model.vision_kwargs.pretrained_path`` in
  a training config); ``pretrained=True`` is an error that says where to get the file.

Every encoder exposes ``.out_channels`` and ``.output_stride``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets.resnet import ResNetFeatures, resnet_params
from torch import nn


class WindowChannels(nn.Module):
    """One input channel per HU window, computed from the dataset's [0, 1] image.

    The loader maps ``input_window`` (HU) to [0, 1]; a radiologist looks at the same volume in
    several windows (lung, mediastinum...). Each window ``(lo, hi)`` becomes a channel
    ``clamp((HU - lo) / (hi - lo), 0, 1)``, so contrasts of a few tens of HU inside soft tissue
    span the whole range of one channel instead of a few hundredths of the wide one.
    """

    def __init__(
        self,
        windows: Sequence[Sequence[float]],
        input_window: Sequence[float] = (-1000.0, 1000.0),
    ) -> None:
        super().__init__()
        lo, hi = (float(v) for v in input_window)
        pairs = [(float(a), float(b)) for a, b in windows]
        if not pairs or any(not a < b for a, b in pairs):
            raise ValueError(f"windows must be (low, high) pairs with low < high, got {windows!r}")
        # HU = lo + x * (hi - lo); channel = (HU - a) / (b - a) = x * scale + shift
        scale = torch.tensor([(hi - lo) / (b - a) for a, b in pairs])
        shift = torch.tensor([(lo - a) / (b - a) for a, b in pairs])
        self.register_buffer("scale", scale.view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W, D) in [0, 1] -> (B, n_windows, H, W, D) in [0, 1]."""
        return (image * self.scale + self.shift).clamp(0.0, 1.0)


class TinyEncoder(nn.Module):
    """A small CNN: patchify stem, then residual units; trains in seconds per epoch on a CPU.

    ``channels[i]`` / ``strides[i]`` describe stage i; stage 0 is a ``Convolution`` whose kernel
    equals its stride (non-overlapping patches, cheap at full resolution), later stages are
    MONAI ``ResidualUnit`` blocks (two 3x3x3 convolutions and a skip connection each).
    ``windows`` (HU pairs) replaces the single input channel with :class:`WindowChannels`.
    ``channels_last`` runs the network in ``torch.channels_last_3d`` memory format.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64),
        strides: Sequence[int] = (4, 1, 2),
        norm: str | tuple = "instance",
        act: str | tuple = "prelu",
        dropout: float | None = None,
        windows: Sequence[Sequence[float]] | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.windows = WindowChannels(windows) if windows else None
        self.channels_last = bool(channels_last)
        if self.windows is not None:
            in_channels = len(windows)
        if len(channels) != len(strides) or not channels:
            raise ValueError(
                f"TinyEncoder needs one stride per stage, got channels={tuple(channels)} "
                f"and strides={tuple(strides)}"
            )
        stem_stride = int(strides[0])
        layers: list[nn.Module] = [
            Convolution(
                spatial_dims=3,
                in_channels=in_channels,
                out_channels=channels[0],
                strides=stem_stride,
                kernel_size=3 if stem_stride == 1 else stem_stride,
                padding=1 if stem_stride == 1 else 0,
                norm=norm,
                act=act,
                dropout=dropout,
            )
        ]
        for c_in, c_out, stride in zip(channels[:-1], channels[1:], strides[1:], strict=True):
            layers.append(
                ResidualUnit(
                    spatial_dims=3,
                    in_channels=c_in,
                    out_channels=c_out,
                    strides=int(stride),
                    subunits=2,
                    norm=norm,
                    act=act,
                    dropout=dropout,
                )
            )
        self.layers = nn.Sequential(*layers)
        if self.channels_last:
            self.layers.to(memory_format=torch.channels_last_3d)
        self.out_channels = int(channels[-1])
        self.output_stride = math.prod(int(s) for s in strides)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W, D) -> (B, out_channels, H/stride, W/stride, D/stride).

        With ``channels_last`` the convolutions run on channels-last tensors (faster on CPU) and
        the map comes out channels-last, which mask pooling reads without a copy.
        """
        if self.windows is not None:
            image = self.windows(image)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        return self.layers(image)


class ResNetTrunk(nn.Module):
    """The convolutional trunk of MONAI's 3D ResNet (MedicalNet layout), up to ``layer{stage}``.

    Layers after ``stage`` are removed (not just skipped), so distributed training sees no unused
    parameters. Output stride: 2 (conv1) x 2 (max pool) x 2 per stage after the first.
    """

    def __init__(
        self,
        model_name: str = "resnet18",
        in_channels: int = 1,
        stage: int = 3,
        pretrained: bool = False,
        pretrained_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if stage not in (1, 2, 3, 4):
            raise ValueError(f"ResNetTrunk stage must be 1..4, got {stage}")
        if model_name not in resnet_params:
            raise ValueError(
                f"unknown ResNet {model_name!r}; MONAI provides {', '.join(resnet_params)}"
            )
        if pretrained:
            raise ValueError(medicalnet_advice(model_name))
        net = ResNetFeatures(model_name, pretrained=False, spatial_dims=3, in_channels=in_channels)
        if pretrained_path is not None:
            load_trunk_weights(net, pretrained_path)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool)
        self.stages = nn.Sequential(*[getattr(net, f"layer{i}") for i in range(1, stage + 1)])
        last_block = self.stages[-1][-1]
        last_conv = [m for m in last_block.modules() if isinstance(m, nn.Conv3d)][-1]
        self.out_channels = int(last_conv.out_channels)
        self.output_stride = 2 ** (stage + 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W, D) -> (B, out_channels, H/stride, W/stride, D/stride)."""
        return self.stages(self.stem(image))


MEDICALNET_REPO = "TencentMedicalNet/MedicalNet-Resnet{depth}"  # what MONAI downloads from
MEDICALNET_FILE = "resnet_{depth}.pth"  # (or resnet_{depth}_23dataset.pth: the same layout)


def medicalnet_advice(model_name: str) -> str:
    """One line: cagcl-mini downloads nothing; where the MedicalNet weights are and how to use
    them (MONAI's own download needs a huggingface_hub API that newer releases removed)."""
    depth = re.sub(r"\D", "", model_name) or "18"
    repo, name = MEDICALNET_REPO.format(depth=depth), MEDICALNET_FILE.format(depth=depth)
    return (
        f"pretrained=True would download MedicalNet weights and cagcl-mini downloads nothing: get "
        f"{name} from https://huggingface.co/{repo} yourself (`huggingface-cli download {repo} "
        f"{name} --local-dir DIR`), then set model.vision_kwargs.pretrained_path to DIR/{name}"
    )


def load_trunk_weights(net: nn.Module, path: str | Path) -> None:
    """Load a local MedicalNet / MONAI ``ResNetFeatures`` state dict into ``net``
    (``weights_only``; a ``{"state_dict": ...}`` wrapper and DataParallel's ``module.`` prefixes
    are accepted). Errors are one line naming the file and the first key at fault."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_path {path} does not exist (a ResNet state-dict file)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors: a damaged or foreign file
        raise ValueError(f"{path} is not a readable state-dict file: {exc}") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: expected a state dict (name -> tensor), got {type(data).__name__}"
        )
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()
    for key, value in own.items():
        if key not in state:
            raise ValueError(f"{path}: no weights for {key} (is it a {type(net).__name__} file?)")
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{path}: {key} has shape {tuple(state[key].shape)} in the file but "
                f"{tuple(value.shape)} in the network"
            )
    net.load_state_dict({k: state[k] for k in own})


# HU windows a radiologist reads a chest CT in: wide, mediastinum (soft tissue), lung
CT_WINDOWS: tuple[tuple[float, float], ...] = ((-1000.0, 1000.0), (-160.0, 240.0), (-1350.0, 150.0))
_TINY: dict = {
    "channels": (16, 32, 64),
    "strides": (4, 1, 2),
    "norm": "batch",
    "windows": CT_WINDOWS,
}
TINY_PRESETS: dict[str, dict] = {"tiny": _TINY, "tiny-fine": {**_TINY, "strides": (3, 1, 2)}}
RESNET_PRESETS: tuple[str, ...] = ("resnet10", "resnet18", "resnet34", "resnet50")
VISION_ENCODERS: tuple[str, ...] = (*TINY_PRESETS, *RESNET_PRESETS)


def build_vision_encoder(name: str = "tiny", **kwargs) -> nn.Module:
    """Build a vision encoder by name ("tiny", "tiny-fine", "resnet18", ...); ``kwargs`` override
    its settings.

    "tiny" and "tiny-fine" take the ``TinyEncoder`` arguments, the ResNets take ``in_channels``, ``stage`` and
    ``pretrained_path`` (a local MedicalNet file). The module maps (B,1,H,W,D) to (B,C,h,w,d) and has ``.out_channels``.
    """
    if name in TINY_PRESETS:
        return TinyEncoder(**{**TINY_PRESETS[name], **kwargs})
    if name in RESNET_PRESETS:
        return ResNetTrunk(model_name=name, **kwargs)
    raise ValueError(f"unknown vision encoder {name!r}; choose one of {', '.join(VISION_ENCODERS)}")
