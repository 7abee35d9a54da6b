"""The --compile paths of training and sampling trace and agree with eager (CPU, aot_eager backend so that
the test checks dynamo capture and autograd through the compiled graph without minutes of C++ codegen;
the inductor + CUDA-graph path is exercised by tools/bench_diffusion.py on the GPU)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from gta_diffusion.augmentation import AugmentConfig, Augmenter, window_seeds
from gta_diffusion.data import WindowConfig
from gta_diffusion.training import TrainConfig, Trainer

TINY = {"fast-mixer-small": {"dim": 8, "dim_mults": (1, 2), "emb_dim": 16, "mid_blocks": 1},
        "mixer-unet": {"dim": 8, "dim_mults": (1, 2)}}


@pytest.mark.parametrize("network", sorted(TINY))
def test_compiled_training_and_sampling_match_eager(tmp_path, toy_store, monkeypatch, network):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    runs = {}
    for compiled in (False, True):
        cfg = TrainConfig(preset=network, network_overrides=TINY[network], steps=4, batch_size=16, warmup_steps=1,
                          compile=compiled, log_every=4, checkpoint_every=4)
        tr = Trainer.create(tmp_path / f"run-{compiled}", toy_store.path, cfg, WindowConfig(horizon=4))
        losses = [float(tr.step()) for _ in range(4)]
        aug = Augmenter(tr.denoiser, tr.windows.norm, tr.windows.cfg, tr.edm,
                        AugmentConfig(mu=0.5, num_steps=8, batch_size=8, compile=compiled))
        gen = aug.generate(tr.windows, tr.windows.starts_np[:8], window_seeds(0, 8))
        runs[compiled] = (losses, gen)
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-4)
    np.testing.assert_allclose(runs[True][1], runs[False][1], atol=1e-4)
    torch._dynamo.reset()


@pytest.mark.parametrize("network", sorted(TINY))
def test_networks_compile_as_one_graph(network):
    """fullgraph=True: no graph break in the forward or backward (a break would split the CUDA graphs)."""
    from gta_diffusion.networks import build_network

    torch._dynamo.reset()
    net = build_network(network, 3, 8, **TINY[network])
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    g = torch.Generator().manual_seed(0)
    x, c_noise, cond = torch.randn(4, 8, 3, generator=g), torch.randn(4, generator=g), torch.randn(4, generator=g)
    dropped = torch.tensor([True, False, False, True])
    out = compiled(x, c_noise, cond, dropped)
    out.square().sum().backward()
    torch.testing.assert_close(out, net(x, c_noise, cond, dropped), rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()
