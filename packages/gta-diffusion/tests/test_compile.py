"""The --compile paths of training and sampling trace and agree with eager (CPU, aot_eager backend so that
the test checks dynamo capture and autograd through the compiled graph without minutes of C++ codegen;
the inductor + CUDA-graph path is exercised by tools/bench_diffusion.py on the GPU)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from gta_diffusion.augment import AugmentConfig, Augmenter, window_seeds
from gta_diffusion.data import WindowConfig
from gta_diffusion.train import TrainConfig, Trainer

TINY = {"dim": 8, "dim_mults": (1, 2), "emb_dim": 16, "mid_blocks": 1}


def test_compiled_training_and_sampling_match_eager(tmp_path, toy_store, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    runs = {}
    for compiled in (False, True):
        cfg = TrainConfig(preset="fast-mixer-small", network_overrides=TINY, steps=4, batch_size=16, warmup_steps=1,
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
