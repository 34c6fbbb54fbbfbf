"""torchrun with 2 CPU processes (gloo) gives the loss and the weights of one process on the same
global batch: embeddings are all-gathered with gradient, DDP averages, nothing is off by N."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers_train import (
    ddp_gradient_worker,
    ddp_loss,
    ddp_problem,
    make_tiny_data,
    tiny_config,
    train_env,
)

from cagcl_mini.train.log import read_log
from cagcl_mini.train.loop import fit

pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)


def test_gathered_loss_gives_single_process_gradients(tmp_path):
    """Per parameter: encoders (through the gathered slices) and the shared temperature."""
    world = 2
    torch.multiprocessing.spawn(
        ddp_gradient_worker,
        args=(world, str(tmp_path / "rendezvous"), str(tmp_path)),
        nprocs=world,
        join=True,
    )
    model, x, y, present, abnormal = ddp_problem()
    v, t = model(x, y)
    loss = ddp_loss(v, t, present, abnormal, model.logit_scale)
    loss.backward()
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-6, atol=1e-7)
        for name, p in model.named_parameters():
            torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("ddp_phantom"))


# every term at once: gathered v/t/masks/texts (local, global), prompts (anatomy), dictionary
# and exclusion mask (diagnosis), the SigLIP bias (sigmoid_global); and augmented texts
ALL_TERMS = {"local": 1.0, "global": 1.0, "anatomy": 0.5, "diagnosis": 0.5, "sigmoid_global": 1.0}


def test_two_processes_match_one_process(tiny_data, tmp_path):
    # frozen text encoder: dropout would draw different masks for 1x4 and 2x2 samples
    # instance norm: batch norm statistics would be per process on CPU (SyncBatchNorm is CUDA-only)
    model = {"vision": "tiny", "vision_kwargs": {"norm": "instance"}, "embed_dim": 32,
             "text_train_layers": 0, "max_length": 32}  # fmt: skip
    steps = 3
    single = tiny_config(
        tiny_data, tmp_path / "one", model=model, steps=steps, loss_preset=ALL_TERMS, augment=True
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
        "cagcl_mini",
        "train",
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
    # grad_norm above is the real gradient check (Adam's update is invariant to a gradient
    # scale); the weights agree to float noise; conv biases before an instance norm have a zero
    # true gradient, so Adam moves them by noise of size ~lr: hence the absolute tolerance
    w_one = torch.load(one.checkpoint, weights_only=True)["model"]
    w_two = torch.load(tmp_path / "two" / "final.pt", weights_only=True)["model"]
    assert set(w_one) == set(w_two)
    for key, value in w_one.items():
        torch.testing.assert_close(w_two[key], value, rtol=1e-3, atol=2e-4, msg=key)
