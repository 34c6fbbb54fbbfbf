"""Segmentation transfer: does contrastive pretraining help a dense task with few labels?

CT-GLIP reports +3.2 % Dice when its grounded image encoder is fine-tuned for segmentation. Here:
the phantom's finding masks (:mod:`cagcl_mini.phantom.finding_masks`), one finding, the vision
tower of a pretrained model (``fvlm`` or ``cagcl``, :func:`cagcl_mini.train.loop.trained_model`)
or a randomly initialised one (``scratch``), a small MONAI decoder
(:class:`cagcl_mini.nn.segmentation.SegmentationNet`), fine-tuned end to end with
``monai.losses.DiceCELoss`` on 10 or 30 labelled training volumes and scored with
``monai.metrics.DiceMetric`` on the validation split.

Choices, all settings of :func:`run_transfer`:

- **The finding** (default ``"effusion"``, pleural effusion): at 48^3 its masks are the largest of
  the four (a few hundred voxels, a band of fluid at the lung base) and the contrast is the highest
  (fluid against aerated lung), so a few labelled volumes can teach it. Nodules are a few dozen
  voxels at 48^3 (often one feature voxel of the stride-8 encoder); liver lesions are darker than
  liver by only 25-60 HU.
- **Labelled volumes**: training volumes whose labels CSV marks the finding and whose mask shows it
  at the network's size; each seed draws its own ``n`` of them (the same draw for every encoder,
  so encoders are compared on the same labels), and seeds the decoder (and the scratch encoder).
- **Validation**: every validation volume with the finding (up to ``max_valid``) gives one Dice;
  ``dice`` is their mean. **Empty cases**: DiceMetric with ``ignore_empty=False`` scores a
  finding-free volume 1 when the prediction is empty too and 0 as soon as one voxel is predicted;
  these never enter ``dice`` but are reported as ``empty_correct`` (the share of ``n_empty``
  finding-free validation volumes predicted empty).
- **Intervals**: mean over seeds with a 95 % Student-t interval
  (:func:`cagcl_mini.evaluation.uncertainty.t_interval`); it holds both the training seed and the
  draw of labelled volumes. The gain of a pretrained encoder over scratch is the mean of the
  per-seed paired differences with its own t interval.

Masks are read with the loader's own MONAI transforms (:mod:`cagcl_mini.data.transforms`): the
same reader checks, ``Orientationd(axcodes="RAS")`` and a ``nearest-exact`` resize to the CT's cube.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Orientationd,
    RandCropByPosNegLabeld,
    Resized,
)

from cagcl_mini import layout
from cagcl_mini.data.dataset import CTReportDataset
from cagcl_mini.data.transforms import AFFINE_ATOL, MetadataSpacingd, SafeLoadImaged
from cagcl_mini.errors import DataError
from cagcl_mini.evaluation.uncertainty import t_interval
from cagcl_mini.nn.segmentation import SegmentationNet
from cagcl_mini.phantom.finding_masks import FINDING_MASK_KINDS, finding_label
from cagcl_mini.train.config import TrainConfig, resolve_config
from cagcl_mini.train.loop import trained_model
from cagcl_mini.train.setup import dataset_for, lr_factor, model_for

ENCODERS: tuple[str, ...] = ("scratch", "fvlm", "cagcl")
N_LABELLED: tuple[int, ...] = (10, 30)
DEFAULT_FINDING = "effusion"
MASK_KEY = "finding"


# ----------------------------------------------------------------------------- masks
def finding_mask_pipeline(size: int) -> Compose:
    """File path + metadata -> the finding mask ``(1, S, S, S)`` on the loader's grid.

    The loader's reader (one-line errors naming the file), its CSV spacing rule, RAS orientation
    and a ``nearest-exact`` resize to the cube (never invents a label).
    """
    keys = (MASK_KEY,)
    return Compose(
        [
            SafeLoadImaged(keys),
            EnsureChannelFirstd(keys, channel_dim="no_channel"),
            MetadataSpacingd(keys),
            Orientationd(keys, axcodes="RAS", labels=None),
            Resized(keys, (int(size),) * 3, mode="nearest-exact"),
        ]
    )


def _check_pair(ct: Path, mask: Path, loaded: Any) -> None:
    """The mask must have its CT's shape and header affine (read from the CT's header only)."""
    header = nib.load(str(ct))
    shape = tuple(int(n) for n in header.shape[:3])
    found = tuple(int(n) for n in loaded.meta["spatial_shape"][:3])
    if found != shape:
        raise DataError(f"finding mask {mask} has shape {found}, its CT {ct} has {shape}")
    # the header affine, before the CSV spacing (applied to both alike by MetadataSpacingd)
    original = np.asarray(loaded.meta["original_affine"], dtype=np.float64)
    if not np.allclose(original, header.affine, rtol=0, atol=AFFINE_ATOL):
        raise DataError(
            f"finding mask {mask} and its CT {ct} differ in affine (tolerance {AFFINE_ATOL} mm)"
        )


class FindingMasks:
    """The binary mask of one finding for each volume of a :class:`CTReportDataset` split.

    ``mask(i)`` is ``(1, S, S, S)`` uint8 (1 where the finding is), on the dataset's grid, kept in
    memory once read. A missing mask file is a FileNotFoundError naming it (only the phantom
    writes finding masks).
    """

    def __init__(self, dataset: CTReportDataset, finding: str = DEFAULT_FINDING) -> None:
        self.dataset = dataset
        self.label = finding_label(finding)
        self.finding = FINDING_MASK_KINDS.get(finding, finding)
        self.root = dataset.dataset_dir.parent
        self.pipeline = finding_mask_pipeline(dataset.size)
        self._memo: dict[int, torch.Tensor] = {}

    def path(self, index: int) -> Path:
        """The mask file of item ``index``."""
        rec = self.dataset.records[index]
        return layout.finding_mask_path(self.root, rec.name, rec.image.parents[2].name)

    def mask(self, index: int) -> torch.Tensor:
        """(1, S, S, S) uint8: 1 where item ``index`` shows the finding."""
        if index not in self._memo:
            rec, path = self.dataset.records[index], self.path(index)
            if not path.is_file():
                raise FileNotFoundError(
                    f"finding mask {path} is missing: finding masks come with the phantom "
                    "(cagcl-mini make-data); real CT-RATE data has none"
                )
            out = self.pipeline({MASK_KEY: str(path), "spacing": list(rec.spacing)})[MASK_KEY]
            _check_pair(rec.image, path, out)
            values = out.as_tensor().round().to(torch.int64)
            self._memo[index] = (values == self.label).to(torch.uint8)
        return self._memo[index]

    def labelled(self) -> list[int]:
        """Items whose labels CSV marks the finding (read from the CSV index, no volume loaded)."""
        table = self.dataset.label_table()
        return [i for i, v in enumerate(table[self.finding].to_numpy()) if v > 0.5]

    def positives(self, limit: int | None = None) -> list[int]:
        """Labelled items whose mask shows the finding at the dataset's size (the first ``limit``)."""
        out = []
        for i in self.labelled():
            if self.mask(i).any():
                out.append(i)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def empties(self, limit: int) -> list[int]:
        """The first ``limit`` items the labels CSV does not mark and whose mask is empty."""
        marked, out = set(self.labelled()), []
        for i in range(len(self.dataset)):
            if len(out) >= limit:
                break
            if i not in marked and not self.mask(i).any():
                out.append(i)
        return out

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image (B,1,S,S,S) float, mask (B,1,S,S,S) long)`` of the given items."""
        images = [self.dataset.load_volume(i)["image"] for i in indices]
        masks = [self.mask(i).long() for i in indices]
        return torch.stack(images), torch.stack(masks)


# ----------------------------------------------------------------------------- models
def encoder_for(name: str, config: TrainConfig, seed: int = 0) -> torch.nn.Module:
    """A copy of the vision tower to fine-tune: ``"scratch"`` is the config's encoder initialised
    from ``seed``; ``"fvlm"`` / ``"cagcl"`` / ``"ctglip"`` the tower pretrained with that loss
    preset (trained first if not cached)."""
    if name == "scratch":
        return copy.deepcopy(model_for(config, seed=seed).vision)
    try:
        model = trained_model(config, loss_preset=name, progress=False)
    except ValueError as exc:
        raise ValueError(f"encoder {name!r}: expected 'scratch' or a loss preset ({exc})") from None
    return copy.deepcopy(model.vision)


def segmentation_model(
    encoder: str, config: TrainConfig | str = "cpu-quick", seed: int = 0
) -> SegmentationNet:
    """The network a fine-tune starts from: ``encoder_for(encoder)`` + a decoder seeded by ``seed``."""
    config = resolve_config(config)
    tower = encoder_for(encoder, config, seed)
    torch.manual_seed(int(seed))
    return SegmentationNet(tower, out_channels=2)


def dice_ce_loss() -> DiceCELoss:
    """Soft Dice of the finding channel + cross-entropy over both softmax channels.

    The background channel is left out of the Dice term: it is near 1 from the first step and
    would halve the pull towards the few finding voxels.
    """
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)


def fine_tune(
    net: SegmentationNet,
    masks: FindingMasks,
    indices: Sequence[int],
    steps: int,
    batch_size: int = 4,
    lr: float = 5e-3,
    seed: int = 0,
    patch: int | None = 32,
) -> list[float]:
    """AdamW on DiceCE for ``steps`` steps over batches drawn from ``indices``; the loss per step.

    ``patch``: each drawn volume gives one ``patch``^3 crop (MONAI ``RandCropByPosNegLabeld``,
    centred on a finding voxel or a background voxel with equal odds), so a step costs a fraction
    of a whole volume and sees the finding in about half its samples; ``None`` trains on whole
    volumes. Warmup over the first tenth of the steps, then a cosine to a twentieth of ``lr``.
    """
    if not indices:
        raise ValueError("fine_tune needs at least one labelled volume")
    if int(steps) < 1 or int(batch_size) < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    crop = None
    if patch is not None:
        if int(patch) < 1 or int(patch) % net.output_stride or int(patch) > masks.dataset.size:
            raise ValueError(
                f"patch must be a multiple of {net.output_stride} up to the image size "
                f"{masks.dataset.size}, got {patch}"
            )
        crop = RandCropByPosNegLabeld(
            ("image", "label"), "label", (int(patch),) * 3, pos=1.0, neg=1.0, num_samples=1
        )
        crop.set_random_state(int(seed))
    gen = torch.Generator().manual_seed(int(seed))
    loss_fn = dice_ce_loss()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warmup, steps, min_ratio=0.05)
    )
    pool = list(indices)
    net.train()
    losses = []
    for _ in range(int(steps)):
        pick = torch.randint(len(pool), (min(batch_size, len(pool)),), generator=gen).tolist()
        image, target = masks.batch([pool[i] for i in pick])
        if crop is not None:
            pairs = [crop({"image": x, "label": y})[0] for x, y in zip(image, target, strict=True)]
            image = torch.stack([torch.as_tensor(p["image"]) for p in pairs])
            target = torch.stack([torch.as_tensor(p["label"]) for p in pairs])
        loss = loss_fn(net(image), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def predict(net: SegmentationNet, image: torch.Tensor) -> torch.Tensor:
    """(B,1,S,S,S) long: the argmax class of each voxel (1 = finding)."""
    net.eval()
    return net(image).argmax(dim=1, keepdim=True)


def volume_dice(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(B,) Dice of binary ``(B,1,...)`` masks with ``monai.metrics.DiceMetric``.

    ``ignore_empty=False``: an empty truth scores 1 when the prediction is empty, 0 otherwise.
    """
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    return metric(prediction.long(), truth.long()).reshape(-1)


def evaluate(
    net: SegmentationNet,
    masks: FindingMasks,
    positives: Sequence[int],
    empties: Sequence[int] = (),
    batch_size: int = 8,
) -> dict[str, Any]:
    """Dice per validation volume with the finding, their mean, and the empty-case share."""
    scores: dict[str, list[float]] = {"pos": [], "empty": []}
    for kind, items in (("pos", list(positives)), ("empty", list(empties))):
        for start in range(0, len(items), batch_size):
            image, truth = masks.batch(items[start : start + batch_size])
            scores[kind] += volume_dice(predict(net, image), truth).tolist()
    return {
        "dice": float(np.mean(scores["pos"])) if scores["pos"] else math.nan,
        "per_volume": scores["pos"],
        "empty_correct": float(np.mean(scores["empty"])) if scores["empty"] else math.nan,
        "n_valid": len(scores["pos"]),
        "n_empty": len(scores["empty"]),
    }


# ----------------------------------------------------------------------------- the experiment
@dataclass(frozen=True)
class TransferSetting:
    """Budget of one fine-tune (the same for every encoder)."""

    steps: int = 150
    batch_size: int = 4
    lr: float = 5e-3
    patch: int | None = 32  # training crops (see fine_tune); None = whole volumes
    max_valid: int | None = None  # validation volumes with the finding (None: all)
    n_empty: int = 20  # finding-free validation volumes for ``empty_correct``


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Mean, 95 % t interval over seeds and the per-seed values."""
    vals = [float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    return {
        "mean": float(np.mean(finite)) if finite else math.nan,
        "ci95": list(t_interval(vals)),
        "per_seed": vals,
    }


def run_transfer(
    config: TrainConfig | str = "cpu-quick",
    finding: str = DEFAULT_FINDING,
    encoders: Sequence[str] = ENCODERS,
    n_labelled: Sequence[int] = N_LABELLED,
    seeds: Sequence[int] = (0, 1, 2),
    setting: TransferSetting | None = None,
    keep_models: bool = False,
) -> dict[str, Any]:
    """Fine-tune every encoder on every number of labelled volumes for every seed; Dice per run.

    Returns ``runs`` (one record per encoder, n, seed), ``dice`` ``{encoder: {n: summary}}``
    (:func:`summarise`), ``empty_correct`` likewise, ``gain_vs_scratch`` (paired per seed), the
    volumes used (``valid_items``: the scored validation items) and the time; with
    ``keep_models`` also ``models`` ``{(encoder, n, seed): SegmentationNet}`` and the mask sets
    ``train_masks`` / ``valid_masks``, for figures. An ``n`` above the training volumes that show the finding is a
    ValueError naming both numbers.
    """
    finding_label(finding)  # an unmasked finding fails before any data is built
    config = resolve_config(config)
    setting = setting or TransferSetting()
    start = time.perf_counter()
    train = FindingMasks(dataset_for(config, "train"), finding)
    valid = FindingMasks(dataset_for(config, "valid"), finding)
    pool = train.positives()
    if max(n_labelled) > len(pool):
        raise ValueError(
            f"{max(n_labelled)} labelled volumes asked, but only {len(pool)} training volumes "
            f"show {train.finding} at {config.image_size}^3"
        )
    val_pos, val_empty = valid.positives(setting.max_valid), valid.empties(setting.n_empty)
    if not val_pos:
        raise ValueError(f"no validation volume shows {valid.finding}; nothing to score")
    runs, models = [], {}
    for seed in seeds:
        rng = np.random.default_rng(int(seed))
        order = [pool[i] for i in rng.permutation(len(pool))]
        for n in n_labelled:
            chosen = order[: int(n)]
            for encoder in encoders:
                t0 = time.perf_counter()
                net = segmentation_model(encoder, config, seed)
                losses = fine_tune(
                    net,
                    train,
                    chosen,
                    setting.steps,
                    setting.batch_size,
                    setting.lr,
                    seed,
                    setting.patch,
                )
                scores = evaluate(net, valid, val_pos, val_empty)
                if keep_models:
                    models[(encoder, int(n), int(seed))] = net
                runs.append(
                    {
                        "encoder": encoder,
                        "n_labelled": int(n),
                        "seed": int(seed),
                        "dice": scores["dice"],
                        "empty_correct": scores["empty_correct"],
                        "first_loss": losses[0],
                        "last_loss": losses[-1],
                        "seconds": time.perf_counter() - t0,
                    }
                )
    kept = {"models": models, "train_masks": train, "valid_masks": valid} if keep_models else {}
    return {
        **kept,
        "finding": train.finding,
        "runs": runs,
        **_tables(runs, encoders, n_labelled),
        "n_valid": len(val_pos),
        "n_empty": len(val_empty),
        "valid_items": {"with_finding": val_pos, "empty": val_empty},
        "n_train_pool": len(pool),
        "seeds": [int(s) for s in seeds],
        "steps": setting.steps,
        "batch_size": setting.batch_size,
        "lr": setting.lr,
        "patch": setting.patch,
        "image_size": config.image_size,
        "interval": "95% Student-t over seeds",
        "seconds": time.perf_counter() - start,
    }


def _tables(
    runs: list[dict[str, Any]], encoders: Sequence[str], n_labelled: Sequence[int]
) -> dict[str, Any]:
    def values(key: str, encoder: str, n: int) -> list[float]:
        rows = [r for r in runs if r["encoder"] == encoder and r["n_labelled"] == n]
        return [r[key] for r in sorted(rows, key=lambda r: r["seed"])]

    dice = {e: {n: summarise(values("dice", e, n)) for n in n_labelled} for e in encoders}
    empty = {e: {n: summarise(values("empty_correct", e, n)) for n in n_labelled} for e in encoders}
    gain = {}
    if "scratch" in encoders:
        for e in encoders:
            if e == "scratch":
                continue
            gain[e] = {}
            for n in n_labelled:
                base, mine = values("dice", "scratch", n), values("dice", e, n)
                gain[e][n] = summarise([a - b for a, b in zip(mine, base, strict=True)])
    return {"dice": dice, "empty_correct": empty, "gain_vs_scratch": gain}
