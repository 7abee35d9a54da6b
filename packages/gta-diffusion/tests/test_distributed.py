"""Data-parallel training and sharded augmentation with two gloo processes launched by torchrun (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from gta_data import TrajectoryStore
from gta_diffusion.augmentation import AugmentConfig, augment
from gta_diffusion.checkpoint import latest_checkpoint, load_checkpoint
from gta_diffusion.distributed import DistInfo, shard_range


def _torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "gta_diffusion.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


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
