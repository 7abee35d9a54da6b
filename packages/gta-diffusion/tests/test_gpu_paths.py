"""GPU-only checks of the hot loops (skipped without CUDA): no host synchronisation inside a training step
or a sampler call, and the bf16 + torch.compile (CUDA graph) paths agree with eager ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gta_data.accel.devices import strict_fp32
from gta_diffusion.augmentation import AugmentConfig, Augmenter, window_seeds
from gta_diffusion.data import WindowConfig
from gta_diffusion.distributed import DistInfo
from gta_diffusion.training import TrainConfig, Trainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
SMALL = {"fast-mixer-small": {"dim": 32, "dim_mults": (1, 2, 4), "emb_dim": 64},
         "mixer-unet": {"dim": 16, "dim_mults": (1, 2, 4)}}
both_networks = pytest.mark.parametrize("network", sorted(SMALL))


def _trainer(tmp_path, store, name, network="fast-mixer-small", dist=DistInfo(), **kw):
    cfg = TrainConfig(preset=network, network_overrides=SMALL[network], steps=100, batch_size=64, warmup_steps=5,
                      log_every=1000, checkpoint_every=1000, **kw)
    return Trainer.create(tmp_path / name, store.path, cfg, WindowConfig(horizon=7), device="cuda", dist=dist)


@pytest.mark.xfail(strict=False, reason="seen on an H100 with torch 2.11 (2026-11-25): the EAGER backward of the "
                   "network synchronises with the host somewhere; the whole-step CUDA graph path is sync-free "
                   "(test_whole_step_cuda_graph_matches_eager_and_resumes_exactly)")
def test_eager_training_step_does_not_sync(tmp_path, toy_store):
    tr = _trainer(tmp_path, toy_store, "run")
    for _ in range(3):
        tr.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            tr.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@both_networks
def test_sampler_does_not_sync(tmp_path, toy_store, network):
    tr = _trainer(tmp_path, toy_store, "run", network)
    aug = Augmenter(tr.denoiser, tr.windows.norm, tr.windows.cfg, tr.edm, AugmentConfig(mu=0.5, num_steps=16), "cuda")
    starts = tr.windows.starts[:32]
    seeds = torch.arange(32, device="cuda")
    aug.sample(tr.windows.gather(starts), tr.windows.cond[starts], seeds)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        aug.sample(tr.windows.gather(starts), tr.windows.cond[starts], seeds)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.slow
@both_networks
def test_fast_paths_agree_with_eager(tmp_path, toy_store, network):
    eager = _trainer(tmp_path, toy_store, "eager", network)
    for mode in ("reduce-overhead", None):
        fast = _trainer(tmp_path, toy_store, f"fast-{mode}", network, bf16=True, compile=True, compile_mode=mode)
        losses = torch.stack([fast.step() for _ in range(30)]).cpu()
        assert torch.isfinite(losses).all()
    ref = torch.stack([eager.step() for _ in range(30)]).cpu()
    assert abs(float(losses.mean()) - float(ref.mean())) < 0.2 * float(ref.mean())
    ws = eager.windows
    starts = ws.starts_np[:64]
    outs = {}
    for mode in ("eager", "reduce-overhead"):
        cfg = AugmentConfig(mu=0.5, num_steps=32, batch_size=64, bf16=mode != "eager", compile=mode != "eager",
                            compile_mode=None if mode == "eager" else mode)
        outs[mode] = Augmenter(eager.denoiser, ws.norm, ws.cfg, eager.edm, cfg, "cuda").generate(
            ws, starts, window_seeds(0, 64))
    # bf16 changes the numbers slightly; the same seeds must still give the same windows up to that.
    scale = np.abs(outs["eager"]).mean()
    assert np.abs(outs["eager"] - outs["reduce-overhead"]).mean() < 0.05 * scale


def _graph_replays_match_eager(eager, graph, steps: int) -> None:
    """``steps`` steps of each trainer: the whole-step graph (3 eager warm-up steps, then replays) gives the
    eager losses, weights and EMA (same kernels, same generator streams; strict fp32, as cuDNN may choose
    another TF32 convolution algorithm under capture); then one replay under the sync checker: no host sync
    inside a replayed step."""
    with strict_fp32():
        ref = torch.stack([eager.step() for _ in range(steps)]).cpu()
        got = torch.stack([graph.step().clone() for _ in range(steps)]).cpu()
    assert graph.graph_runner.captured()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for p_e, p_g in zip(eager.denoiser.parameters(), graph.denoiser.parameters(), strict=True):
        torch.testing.assert_close(p_g, p_e, rtol=1e-5, atol=1e-6)
    for e_e, e_g in zip(eager.ema, graph.ema, strict=True):
        torch.testing.assert_close(e_g, e_e, rtol=1e-5, atol=1e-6)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        graph.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@both_networks
def test_whole_step_cuda_graph_matches_eager_and_resumes_exactly(tmp_path, toy_store, network):
    graph = _trainer(tmp_path, toy_store, "graph", network, cuda_graph=True)
    _graph_replays_match_eager(_trainer(tmp_path, toy_store, "eager-ref", network), graph, 12)
    # Exact resume: a checkpoint taken between replays continues like the uninterrupted run.
    graph.save()
    with strict_fp32():
        cont = torch.stack([graph.step().clone() for _ in range(6)]).cpu()
        resumed = Trainer.create(tmp_path / "graph", None, device="cuda")
        assert resumed.step_count == 13
        again = torch.stack([resumed.step().clone() for _ in range(6)]).cpu()
    torch.testing.assert_close(again, cont, rtol=1e-5, atol=1e-6)


def test_whole_step_cuda_graph_with_the_gradient_all_reduce_matches_eager(tmp_path, toy_store):
    """Data-parallel training's step on a one-rank NCCL group: the flat gradient buffer's all-reduce is captured
    in the whole-step graph, and the replays equal the single-process eager steps (a sum over one rank and a
    scale by 1 change nothing); a replayed step, all-reduce included, never syncs with the host."""
    import torch.distributed as tdist

    if not tdist.is_nccl_available():
        pytest.skip("needs NCCL")
    tdist.init_process_group("nccl", store=tdist.HashStore(), rank=0, world_size=1,
                             device_id=torch.device("cuda", torch.cuda.current_device()))
    try:
        graph = _trainer(tmp_path, toy_store, "graph", dist=DistInfo(group_of_one=True), cuda_graph=True)
        assert graph.grad_average is not None
        _graph_replays_match_eager(_trainer(tmp_path, toy_store, "eager-ref"), graph, 12)
    finally:
        tdist.destroy_process_group()


def test_synther_cuda_graph_matches_eager(tmp_path, toy_store):
    """SynthER's trainer on the whole-step CUDA graph path: the replays equal the eager steps (same kernels,
    same generator streams), and a replayed step (transition batch included) never syncs with the host."""
    from gta_diffusion.baselines.synther import create_synther_trainer, synther_train_config

    def trainer(name, **kw):
        cfg = synther_train_config(toy_store.num_transitions, preset="synther-small", batch_size=64, steps=100,
                                   network_overrides={"width": 64, "num_blocks": 2, "input_dim": 32, "emb_dim": 32},
                                   log_every=1000, checkpoint_every=1000, **kw)
        return create_synther_trainer(tmp_path / name, toy_store.path, cfg, device="cuda")

    _graph_replays_match_eager(trainer("eager"), trainer("graph", cuda_graph=True), 10)
