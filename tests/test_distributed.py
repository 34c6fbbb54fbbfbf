"""torchrun with 2 CPU processes (gloo) gives the loss and the weights of one process on the same
global batch: embeddings are all-gathered with gradient, DDP averages, nothing is off by N."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers_train import make_tiny_data, tiny_config, train_env

from cagcl_mini.train import fit
from cagcl_mini.train_log import read_log

pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("ddp_phantom"))


@pytest.mark.parametrize("loss_preset", ["cagcl", "ctglip"])
def test_two_processes_match_one_process(tiny_data, tmp_path, loss_preset):
    # frozen text encoder: dropout would draw different masks for 1x4 and 2x2 samples
    model = {"vision": "tiny", "embed_dim": 32, "text_train_layers": 0, "max_length": 32}
    steps = 3
    single = tiny_config(
        tiny_data, tmp_path / "one", model=model, steps=steps, loss_preset=loss_preset
    )
    yaml_path = single.replace(out_dir=str(tmp_path / "two")).save_yaml(tmp_path / "two.yaml")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "cagcl_mini.train",
        "--config",
        str(yaml_path),
    ]
    done = subprocess.run(cmd, env=train_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    one = fit(single)
    ref = read_log(one.log)
    two = read_log(tmp_path / "two" / "log.jsonl")
    assert [r["step"] for r in two] == list(range(1, steps + 1))  # rank 0 logs, once per step
    terms = [t for t in single.loss_weights()] + ["loss", "grad_norm"]
    for a, b in zip(ref, two, strict=True):
        for term in terms:
            assert b[term] == pytest.approx(a[term], rel=1e-4), (a["step"], term)
    # the gradients (hence the updates) match too: compare the trained weights
    w_one = torch.load(one.checkpoint, weights_only=True)["model"]
    w_two = torch.load(tmp_path / "two" / "final.pt", weights_only=True)["model"]
    assert set(w_one) == set(w_two)
    for key, value in w_one.items():
        torch.testing.assert_close(w_two[key], value, rtol=1e-4, atol=1e-5, msg=key)
