"""The training presets, as plain data: each is a set of changes to ``TrainConfig``'s defaults.

- ``cpu-quick`` (the defaults, the tutorial's budget): the 64^3 phantom volumes seen at 48^3, the
  tiny CNN, the bundled MiniLM with CLS pooling and its last layer trainable, batch 8, 240 steps.
- ``gpu-full``: 96^3 volumes, a ResNet-18 trunk, batch 32, 3000 steps, bf16 autocast.

Kept apart from :mod:`cagcl_mini.train.config` so the command line can name them without
importing torch.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "cpu-quick": {},
    "gpu-full": {
        "name": "gpu-full",
        "data_size": 96,
        "image_size": 96,
        "n_train": 2000,
        "n_valid": 200,
        "model": {
            "vision": "resnet18",
            "embed_dim": 256,
            "text_pooling": "cls",
            "text_train_layers": 2,
            "max_length": 128,
        },
        "batch_size": 32,
        "steps": 3000,
        "lr": 5e-4,
        "text_lr": 2e-5,
        "warmup_steps": 150,
        "checkpoint_every": 500,
        "log_every": 10,
        "num_workers": 4,
        "data_cache": "disk",
    },
}
