"""A segmentation network on top of the pretrained image tower: TinyEncoder + a small MONAI decoder.

Segmentation transfer asks whether what the contrastive pretraining put into the image encoder
helps a dense task that has few labels (CT-GLIP fine-tunes its grounded encoder for organ and
tumour segmentation). The encoder is the vision tower of :class:`cagcl_mini.nn.model.AnatomyCLIP`
(:class:`cagcl_mini.nn.vision.TinyEncoder`), reused with its weights; the decoder is new:

- the encoder's stages run in order; the last output at each resolution is a skip feature
  (``"tiny"``: 32 channels at stride 4, 64 channels at stride 8);
- one MONAI ``UnetUpBlock`` per step from a coarser resolution to the next finer one (a transposed
  convolution, concatenation with the skip feature, two 3x3x3 convolutions);
- a ``UnetOutBlock`` (1x1x1 convolution) gives ``out_channels`` logits at the finest encoder
  resolution, and a non-trainable trilinear ``UpSample`` brings them to the input resolution.

The logits are upsampled rather than learned at full resolution because the learned full-resolution
blocks cost several times the whole encoder on a laptop CPU, while the finding masks of the phantom
at 48^3 are blobs several voxels across; a trilinear upsampling of logits draws smooth outlines.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import UnetOutBlock, UnetUpBlock, UpSample
from torch import nn

from cagcl_mini.nn.vision import TinyEncoder


def encoder_skips(encoder: TinyEncoder) -> list[tuple[int, int, int]]:
    """``(stage index, channels, stride)`` of the last stage at each resolution, finest first.

    The strides come from one dry run in eval mode (batch norm statistics are left alone), so any
    ``channels``/``strides`` of a :class:`TinyEncoder` work.
    """
    if not isinstance(encoder, TinyEncoder):
        raise TypeError(
            f"SegmentationNet needs a TinyEncoder (vision 'tiny'), got {type(encoder).__name__}"
        )
    edge = 2 * int(encoder.output_stride)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            first = encoder.layers[0]
            x = torch.zeros(1, first.in_channels, edge, edge, edge)
            found: dict[int, tuple[int, int, int]] = {}
            for i, layer in enumerate(encoder.layers):
                x = layer(x)
                stride = edge // int(x.shape[-1])
                found[stride] = (i, int(x.shape[1]), stride)  # later stages win
    finally:
        encoder.train(was_training)
    return [found[s] for s in sorted(found)]


class SegmentationNet(nn.Module):
    """Encoder + MONAI decoder: (B, 1, H, W, D) in [0, 1] -> (B, out_channels, H, W, D) logits.

    ``encoder`` is used as given (pass a pretrained tower to fine-tune it, a fresh one to train from
    scratch). ``H, W, D`` must be multiples of the encoder's output stride. ``norm`` is the
    decoder's normalisation (instance norm behaves with the few volumes per batch of fine-tuning).
    """

    def __init__(
        self, encoder: TinyEncoder, out_channels: int = 2, norm: str | tuple = "instance"
    ) -> None:
        super().__init__()
        if int(out_channels) < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.encoder = encoder
        self.skips = encoder_skips(encoder)
        self.out_channels = int(out_channels)
        self.up = nn.ModuleList(
            UnetUpBlock(
                spatial_dims=3,
                in_channels=coarse[1],
                out_channels=fine[1],
                kernel_size=3,
                stride=1,
                upsample_kernel_size=coarse[2] // fine[2],
                norm_name=norm,
            )
            for fine, coarse in zip(self.skips[-2::-1], self.skips[:0:-1], strict=True)
        )
        finest_channels, finest_stride = self.skips[0][1], self.skips[0][2]
        self.head = UnetOutBlock(3, finest_channels, self.out_channels)
        self.resize = (
            UpSample(
                3,
                self.out_channels,
                self.out_channels,
                scale_factor=finest_stride,
                mode="nontrainable",
                interp_mode="trilinear",
            )
            if finest_stride > 1
            else nn.Identity()
        )

    @property
    def output_stride(self) -> int:
        """The factor the input edges must be multiples of."""
        return int(self.encoder.output_stride)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits at the input's resolution; a one-line ValueError for a shape the encoder
        cannot halve cleanly."""
        if image.ndim != 5 or any(int(n) % self.output_stride for n in image.shape[2:]):
            raise ValueError(
                f"SegmentationNet expects (B, C, H, W, D) with H, W, D multiples of "
                f"{self.output_stride}, got shape {tuple(image.shape)}"
            )
        x = image
        if self.encoder.windows is not None:
            x = self.encoder.windows(x)
        if self.encoder.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        keep = {i for i, _, _ in self.skips}
        features: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.encoder.layers):
            x = layer(x)
            if i in keep:
                features[i] = x
        order = [features[i] for i, _, _ in self.skips]  # finest first
        h = order[-1]
        for block, skip in zip(self.up, order[-2::-1], strict=True):
            h = block(h, skip)
        return self.resize(self.head(h)).contiguous()
