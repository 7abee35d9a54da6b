"""Training: exact resume after a kill, atomic checkpoints, learning-rate schedule, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gta_diffusion.checkpoint import latest_checkpoint, load_checkpoint
from gta_diffusion.data import WindowConfig
from gta_diffusion.errors import DiffusionError
from gta_diffusion.training import TrainConfig, Trainer, load_model, lr_at

TINY = {"dim": 8, "dim_mults": (1, 2), "emb_dim": 16, "mid_blocks": 1}


def _cfg(**kw):
    base = dict(preset="fast-mixer-small", network_overrides=TINY, steps=8, batch_size=16, warmup_steps=2,
                log_every=2, checkpoint_every=3, keep_checkpoints=2)
    return TrainConfig(**{**base, **kw})


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=110, warmup_steps=10, lr=1.0, min_lr_ratio=0.0)
    assert lr_at(cfg, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.5)  # half way through the cosine
    assert lr_at(cfg, 110) == pytest.approx(0.0, abs=1e-12)
    short = TrainConfig(steps=50, warmup_steps=1000, lr=1.0)  # warm-up capped at 10% of the run
    assert lr_at(short, 4) == pytest.approx(1.0)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, toy_store):
    wcfg = WindowConfig(horizon=4)
    full = Trainer.create(tmp_path / "full", toy_store.path, _cfg(), wcfg)
    full.train()
    # "Kill" at step 5: the last checkpoint is step 3, steps 4-5 are lost and redone after resuming.
    killed = Trainer.create(tmp_path / "killed", toy_store.path, _cfg(), wcfg)
    killed.train(until=5)
    assert latest_checkpoint(tmp_path / "killed").name == "step-000000003"
    del killed
    resumed = Trainer.create(tmp_path / "killed", None)
    assert resumed.step_count == 3
    resumed.train()
    for (name, a), b in zip(full.denoiser.state_dict().items(), resumed.denoiser.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(full.ema, resumed.ema, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(full.data_gen.get_state(), resumed.data_gen.get_state())
    # The metrics of the resumed run read as one uninterrupted run.
    lines = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [r["step"] for r in ref] == [2, 4, 6, 8]
    np.testing.assert_allclose([r["loss"] for r in lines], [r["loss"] for r in ref], rtol=1e-6)


def test_checkpoints_are_complete_and_pruned(tmp_path, toy_store):
    tr = Trainer.create(tmp_path / "run", toy_store.path, _cfg(steps=7), WindowConfig(horizon=4))
    tr.train()
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == ["step-000000006", "step-000000007"]  # keep_checkpoints = 2, no temporary leftovers
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert ckpt["state"]["step"] == 7 and "data.0" in ckpt["rng"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["window"]["horizon"] == 4 and config["network"]["parameters"] > 0
    assert config["normalizer"]["env_id"] == toy_store.env_id
    denoiser, norm, wcfg, edm, _ = load_model(tmp_path / "run")
    ema = dict(zip([n for n, _ in tr.denoiser.named_parameters()], tr.ema, strict=True))
    for name, p in denoiser.named_parameters():
        assert torch.equal(p, ema[name])
    assert wcfg.horizon == 4 and norm.transition_dim == 3 and edm.num_steps == 128


def test_training_reduces_the_loss(tmp_path, toy_store):
    tr = Trainer.create(tmp_path / "run", toy_store.path, _cfg(steps=150, log_every=50, checkpoint_every=150,
                                                               batch_size=64, warmup_steps=10), WindowConfig(horizon=4))
    logs = []
    tr.train(on_log=logs.append)
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert all(np.isfinite(r["grad_norm"]) for r in logs)


def test_bad_training_input(tmp_path, toy_store):
    with pytest.raises(DiffusionError, match="horizon=40"):
        Trainer.create(tmp_path / "a", toy_store.path, _cfg(), WindowConfig(horizon=40))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "junk.txt").write_text("x")
    with pytest.raises(DiffusionError, match="not a gta-diffusion run"):
        Trainer.create(tmp_path / "b", toy_store.path, _cfg())
    with pytest.raises(DiffusionError, match="no run to resume"):
        Trainer.create(tmp_path / "c", None)
    with pytest.raises(DiffusionError, match="no checkpoint"):
        Trainer.create(tmp_path / "d", toy_store.path, _cfg(), WindowConfig(horizon=4))
        load_model(tmp_path / "d")


def test_resume_before_the_first_checkpoint_and_with_other_data(tmp_path, toy_store, make_toy_store):
    run = tmp_path / "run"
    early = Trainer.create(run, toy_store.path, _cfg(checkpoint_every=100), WindowConfig(horizon=4))
    early.train(until=4)  # logged steps 2 and 4, no checkpoint: a kill here loses them
    assert latest_checkpoint(run) is None and (run / "metrics.jsonl").read_text().count("\n") == 2
    resumed = Trainer.create(run, None)
    assert resumed.step_count == 0 and not (run / "metrics.jsonl").read_text().strip()  # logs start over
    resumed.train()
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))
    # Same env and dims but other data: not a resume of this run.
    other = make_toy_store(tmp_path / "other.zarr", episodes=30)
    with pytest.raises(DiffusionError, match="is not the data run"):
        Trainer.create(run, other.path)
    # ... nor is a store regenerated at the recorded path.
    import shutil

    shutil.rmtree(toy_store.path)
    make_toy_store(toy_store.path, episodes=30, seed=5)
    with pytest.raises(DiffusionError, match="is not the data run"):
        Trainer.create(run, None)
