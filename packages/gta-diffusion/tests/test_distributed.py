"""Data-parallel training and sharded augmentation with two gloo processes launched by torchrun (CPU); the same
checks of the flat gradient average on two GPUs with NCCL and whole-step CUDA graphs (skipped unless >= 2 GPUs)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gta_data import TrajectoryStore
from gta_diffusion.augmentation import AugmentConfig, augment
from gta_diffusion.checkpoint import latest_checkpoint, load_checkpoint
from gta_diffusion.data import WindowConfig
from gta_diffusion.distributed import DistInfo, GradientAverage, shard_range
from gta_diffusion.edm import edm_loss
from gta_diffusion.errors import DiffusionError
from gta_diffusion.training import Trainer, generator_seeds, lr_at

WORKER = Path(__file__).with_name("dist_train_worker.py")
_spec = importlib.util.spec_from_file_location("dist_train_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def _torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "gta_diffusion.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _run_worker(out: Path, store_path: Path, *, device: str = "cpu", cuda_graph: bool = False) -> list[dict]:
    """Both ranks' results of dist_train_worker.py run by torchrun on two processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NCCL_NVLS_ENABLE": "0"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER),
           "--data", str(store_path), "--out", str(out), "--device", device, *(["--cuda-graph"] if cuda_graph else [])]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def union_reference(run_dir: Path, store_path: Path, steps: int, batch_size: int, device: str, world: int = 2):
    """One process training on the union of the ranks' batches: rank r's windows and loss noise drawn from rank
    r's generators, the losses concatenated into one batch of ``batch_size`` and averaged over it, ONE backward,
    then the Trainer's clipping, AdamW and EMA. Returns the per-step losses, the grad-norm sum, weights, EMA."""
    cfg = worker.train_config(steps, batch_size, False)
    ref = Trainer.create(run_dir, store_path, cfg, WindowConfig(horizon=4), device=device)  # one process
    gens = [tuple(torch.Generator(device).manual_seed(s) for s in generator_seeds(cfg.seed, r)) for r in range(world)]
    losses, gnorm_sum = [], 0.0
    for k in range(steps):
        for group in ref.opt.param_groups:
            group["lr"] = lr_at(cfg, k)
        parts = []
        for data_gen, loss_gen in gens:
            x0, cond = ref.windows.sample(batch_size // world, data_gen)
            parts.append(edm_loss(ref.denoiser, x0, cond, cfg=ref.edm, loss_mask=ref.mask,
                                  cond_drop_prob=cfg.cond_drop_prob, generator=loss_gen))
        loss = torch.cat(parts).float().sum() * ref.inv_count  # inv_count: 1 / (entries of the whole batch)
        ref.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm_sum += float(torch.nn.utils.clip_grad_norm_(ref.params, cfg.grad_clip))
        ref.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ref.ema, ref._ema_src, 1.0 - min(cfg.ema_decay, (1 + k) / (10 + k)))
        losses.append(float(loss.detach()))
    return {"losses": torch.tensor(losses), "gnorm_sum": gnorm_sum,
            "params": [p.detach().cpu() for p in ref.denoiser.parameters()], "ema": [e.cpu() for e in ref.ema]}


def _check_against_union(results: list[dict], ref: dict, run: Path, *, rtol: float, atol: float,
                         resume_tol: float = 0.0) -> None:
    """Two ranks against the union-batch reference; the resumed run against the uninterrupted one (to the bit,
    or within ``resume_tol`` where the resumed steps run eagerly what the uninterrupted run replayed)."""
    first, second = results
    for part in ("params", "ema"):  # the replicas stay bit-identical
        for a, b in zip(first["train"][part], second["train"][part], strict=True):
            assert torch.equal(a, b), part
    got = first["train"]
    torch.testing.assert_close(got["losses"], ref["losses"], rtol=rtol, atol=atol)
    torch.testing.assert_close(float(got["gnorm_sum"]), ref["gnorm_sum"], rtol=rtol, atol=atol)
    for part in ("params", "ema"):
        for a, b in zip(got[part], ref[part], strict=True):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    # Rank 0 alone checkpointed (one checkpoint, holding both ranks' generators); the resume from it continued
    # exactly as the uninterrupted run.
    ckpts = [p.name for p in (run / "checkpoints").iterdir() if p.is_dir()]
    assert ckpts == ["step-000000003"]
    ckpt = load_checkpoint(latest_checkpoint(run))
    assert ckpt["state"]["world_size"] == 2 and {"data.0", "data.1", "loss.0", "loss.1"} <= set(ckpt["rng"])
    for res in results:
        assert res["resumed_from"] == 3 and res["resumed"]["step"] == res["train"]["step"] == 6
        pairs = [(res["resumed"]["losses"], res["train"]["losses"][3:])]
        pairs += [pair for part in ("params", "ema") for pair in zip(res["resumed"][part], res["train"][part], strict=True)]
        for a, b in pairs:
            torch.testing.assert_close(a, b, rtol=resume_tol, atol=resume_tol / 10)


@pytest.fixture(scope="module")
def gloo_results(tmp_path_factory, make_toy_store):
    """One torchrun of two gloo ranks for all the CPU checks (a process group costs seconds to start)."""
    root = tmp_path_factory.mktemp("gloo")
    store = make_toy_store(root / "toy.zarr")
    return root, store, _run_worker(root / "out", store.path)


def test_flat_gradient_average_is_the_union_batch_gradient(gloo_results):
    _, _, results = gloo_results
    net, x, y = worker.average_case(0)
    net.load_state_dict(results[0]["average"]["state"])
    loss = torch.nn.functional.mse_loss(net(x), y)  # float64, the whole batch in one process
    grads = torch.autograd.grad(loss, list(net.parameters()))
    for res in results:
        for key, value in results[0]["average"]["state"].items():  # rank 1's own init was replaced by rank 0's
            assert torch.equal(res["average"]["state"][key], value)
        torch.testing.assert_close(res["average"]["loss"], loss.detach(), rtol=1e-13, atol=1e-15)
        for got, want in zip(res["average"]["grads"], grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_two_ranks_train_as_one_process_on_the_union_batch(gloo_results, tmp_path):
    root, store, results = gloo_results
    ref = union_reference(tmp_path / "ref", store.path, 6, 16, "cpu")
    _check_against_union(results, ref, root / "out" / "run", rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["eager", "cuda-graph"])
def test_two_gpus_train_as_one_gpu_on_the_union_batch(tmp_path, toy_store, cuda_graph):
    """NCCL, the all-reduce inside the captured whole-step graph on every rank: the union batch's training."""
    results = _run_worker(tmp_path / "out", toy_store.path, device="cuda", cuda_graph=cuda_graph)
    ref = union_reference(tmp_path / "ref", toy_store.path, 6, 16, "cuda")
    _check_against_union(results, ref, tmp_path / "out" / "run", rtol=1e-3, atol=1e-5, resume_tol=1e-5)


def test_one_rank_group_steps_as_the_single_process(tmp_path, toy_store):
    """The data-parallel step (flat gradient buffer, all-reduce, scale) on a one-rank gloo group gives the
    single-process step's losses and weights: accumulating into a zeroed buffer, summing over one rank and
    scaling by 1 change no bit."""
    import torch.distributed as tdist

    def trainer(name, dist):
        cfg = worker.train_config(5, 8, False)
        return Trainer.create(tmp_path / name, toy_store.path, cfg, WindowConfig(horizon=4), dist=dist)

    single = trainer("single", DistInfo())
    ref = torch.stack([single.step() for _ in range(5)])
    tdist.init_process_group("gloo", store=tdist.HashStore(), rank=0, world_size=1)
    try:
        grouped = trainer("grouped", DistInfo(group_of_one=True))
        assert grouped.grad_average is not None and single.grad_average is None
        got = torch.stack([grouped.step() for _ in range(5)])
        views = grouped.grad_average.grads
        assert all(p.grad.data_ptr() == g.data_ptr() for p, g in zip(grouped.params, views, strict=True))
        grouped.opt.zero_grad(set_to_none=True)  # cuts the gradients off from the buffer: refused, not ignored
        with pytest.raises(DiffusionError, match="no longer a view"):
            grouped.step()
    finally:
        tdist.destroy_process_group()
    assert torch.equal(got, ref)
    for a, b in zip(grouped.denoiser.parameters(), single.denoiser.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(grouped.ema, single.ema, strict=True))


def test_gradient_average_refuses_what_it_cannot_average():
    import torch.distributed as tdist

    with pytest.raises(ValueError, match="process group"):
        GradientAverage(list(torch.nn.Linear(2, 2).parameters()))
    tdist.init_process_group("gloo", store=tdist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="no parameters"):
            GradientAverage([])
        mixed = [torch.zeros(2, requires_grad=True), torch.zeros(2, dtype=torch.float64, requires_grad=True)]
        with pytest.raises(ValueError, match="one dtype and device"):
            GradientAverage(mixed)
    finally:
        tdist.destroy_process_group()


def test_shard_range_covers_everything_once():
    for n in (0, 1, 5, 16):
        parts = [shard_range(n, DistInfo(rank=r, world_size=3)) for r in range(3)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))


def test_ddp_training_exact_resume_and_sharded_augmentation(tmp_path, toy_store):
    run, split, out = tmp_path / "run", tmp_path / "split", tmp_path / "aug.zarr"
    args = ["--network", "fast-mixer-small", "--steps", "4", "--batch-size", "16", "--horizon", "4", "--warmup-steps", "1",
            "--log-every", "2", "--checkpoint-every", "100", "--device", "cpu"]
    for cmd in (["--data", str(toy_store.path), "--out", str(run)],
                ["--data", str(toy_store.path), "--out", str(split), "--stop-after", "2"],
                ["--out", str(split)]):
        res = _torchrun("train", *cmd, *args)
        assert res.returncode == 0, res.stderr[-3000:]
    ckpt = load_checkpoint(latest_checkpoint(run))
    assert ckpt["state"]["step"] == 4 and ckpt["state"]["world_size"] == 2
    assert {"data.0", "data.1", "loss.0", "loss.1"} <= set(ckpt["rng"])
    assert not np.array_equal(ckpt["rng"]["data.0"].numpy(), ckpt["rng"]["data.1"].numpy())
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # rank 0 logs alone
    # Stopped at step 2 and resumed on two ranks: identical to the uninterrupted two-rank run.
    resumed = load_checkpoint(latest_checkpoint(split))
    assert resumed["state"]["step"] == 4
    for part in ("model", "ema", "rng"):
        for key in ckpt[part]:
            assert (ckpt[part][key] == resumed[part][key]).all(), (part, key)

    res = _torchrun("augment", "--model", str(run), "--data", str(toy_store.path), "--out", str(out), "--mu", "0.5",
                    "--num-transitions", "90", "--batch-size", "8", "--num-steps", "8", "--seed", "5",
                    "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    sharded = TrajectoryStore.open(out)
    assert sharded.num_transitions == 90 and sharded.provenance["world_size"] == 2
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # shard files removed
    # Per-window seeds: the merged store equals a single-process run of the same settings.
    single = augment(run, toy_store.path, tmp_path / "single.zarr",
                     AugmentConfig(mu=0.5, num_transitions=90, batch_size=8, num_steps=8, seed=5))
    np.testing.assert_array_equal(sharded.meta("source_start"), single.meta("source_start"))
    np.testing.assert_array_equal(sharded.meta("seed"), single.meta("seed"))
    np.testing.assert_allclose(sharded.load().observations, single.load().observations, atol=1e-5)
    np.testing.assert_allclose(sharded.load().rewards, single.load().rewards, atol=1e-5)
