"""SynthER baseline: transition vectors and normaliser (float64 reference), thresholding and segmentation,
a tiny model that learns a toy transition distribution, store validity, per-transition seeds, loading,
exact resume, bad input and the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gta_data import StoreError, TrajectoryStore, Transitions, write_store
from gta_diffusion.baselines.synther import (
    SampleConfig,
    TransitionNormalizer,
    create_synther_trainer,
    fit_transition_normalizer,
    generate_synther,
    load_synther,
    segment_ends,
    synther_train_config,
    transition_vectors,
    vectors_to_transitions,
)
from gta_diffusion.checkpoint import latest_checkpoint
from gta_diffusion.config import EMA_PER_STEP
from gta_diffusion.errors import DiffusionError

TINY = dict(width=128, num_blocks=2, input_dim=32, emb_dim=32)  # ~40k parameters: seconds on one CPU thread


def make_toy(path, *, episodes=500, length=4, env_id="ToyStep-v0", seed=0):
    """s ~ N((1, -2), diag(0.5, 2)^2), a = tanh(N(0, 1)), r = 2a + 3, s' = s + 0.3a; every episode ends in a
    terminal (25% of the transitions), so the terminal column is learnable."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    s = rng.normal([1.0, -2.0], [0.5, 2.0], size=(n, 2))
    a = np.tanh(rng.normal(size=(n, 1)))
    ends = np.arange(1, episodes + 1) * length
    term = np.zeros(n, bool)
    term[ends - 1] = True
    tr = Transitions(s, a, 2 * a[:, 0] + 3, s + 0.3 * a, term, np.zeros(n, bool))
    return write_store(path, tr, ends, env_id=env_id, ref_min_score=-1.0, ref_max_score=1.0)


def tiny_cfg(n, **kw):
    base = dict(preset="synther-small", network_overrides=TINY, batch_size=256, log_every=500)
    return synther_train_config(n, **{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny SynthER model trained on the toy store (~5 s on one thread), shared by the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("synther")
    store = make_toy(root / "toy.zarr")
    trainer = create_synther_trainer(root / "run", store.path, tiny_cfg(store.num_transitions, steps=3000,
                                                                         checkpoint_every=3000))
    trainer.train()
    yield store, trainer, root
    torch.set_num_threads(before)


def test_vectors_and_normalizer_against_float64(tmp_path):
    store = make_toy(tmp_path / "toy.zarr", episodes=20)
    data = store.load()
    x = transition_vectors(data)
    assert x.shape == (80, 2 * 2 + 1 + 2)
    np.testing.assert_array_equal(x[:, -1], data.terminals.astype(np.float32))
    np.testing.assert_array_equal(x[:, 3], data.rewards)
    norm = fit_transition_normalizer(data, store.env_id)
    ref = np.concatenate([data.observations, data.actions, data.rewards[:, None], data.next_observations],
                         axis=1).astype(np.float64)
    np.testing.assert_allclose(norm.mean[:-1], ref.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.std[:-1], ref.std(0), rtol=1e-12)
    assert (norm.mean[-1], norm.std[-1]) == (0.0, 1.0)  # terminal column is not z-scored
    z = norm.normalize(x)
    np.testing.assert_allclose(z[:, :-1].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :-1].std(0), 1, atol=1e-5)
    np.testing.assert_array_equal(z[:, -1], x[:, -1])
    back = TransitionNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_allclose(back.denormalize(z), x, atol=1e-5)
    tr = vectors_to_transitions(x, norm)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(getattr(tr, name), getattr(data, name))


def test_terminal_threshold_and_segments():
    norm = TransitionNormalizer(mean=np.zeros(5), std=np.ones(5), obs_dim=1, act_dim=1, env_id="X")
    x = np.zeros((6, 5), np.float32)
    x[:, -1] = [0.49, 0.51, -3.0, 7.0, 0.5, 1.0]
    tr = vectors_to_transitions(x, norm)
    assert tr.terminals.dtype == bool and tr.terminals.tolist() == [False, True, False, True, False, True]
    np.testing.assert_array_equal(segment_ends(tr.terminals, 1000), [2, 4, 6])
    np.testing.assert_array_equal(segment_ends(np.zeros(7, bool), 3), [3, 6, 7])
    np.testing.assert_array_equal(segment_ends(np.array([0, 0, 1, 0, 0, 0, 0], bool), 3), [3, 6, 7])
    np.testing.assert_array_equal(segment_ends(np.array([1, 0, 0, 0, 1], bool), 10), [1, 5])
    with pytest.raises(DiffusionError, match="expected"):
        vectors_to_transitions(np.zeros((2, 4)), norm)


def test_training_defaults_follow_synther():
    small, large = synther_train_config(799_999), synther_train_config(800_000)
    assert (small.batch_size, large.batch_size) == (256, 1024)
    assert (large.steps, large.lr, large.grad_clip, large.warmup_steps, large.weight_decay) == (100_000, 3e-4, 1.0, 0, 0)
    assert large.betas == (0.9, 0.99) and large.preset == "synther"
    assert EMA_PER_STEP**10 == pytest.approx(0.995)  # 0.995 every 10 steps


def test_samples_match_the_data(trained, tmp_path):
    store, _, root = trained
    out = generate_synther(root / "run", tmp_path / "aug.zarr",
                           SampleConfig(num_transitions=4000, batch_size=1500, num_steps=64, seed=1))
    gen, data = out.validate().load(), store.load()
    y, x = transition_vectors(gen), transition_vectors(data)
    mean_err = np.abs(y.mean(0) - x.mean(0))[:-1] / x.std(0)[:-1]
    std_ratio = y.std(0)[:-1] / x.std(0)[:-1]
    assert mean_err.max() < 0.15, mean_err
    assert np.all((std_ratio > 0.85) & (std_ratio < 1.15)), std_ratio
    assert set(np.unique(y[:, -1])) <= {0.0, 1.0} and gen.terminals.dtype == bool
    assert abs(gen.terminals.mean() - 0.25) < 0.12
    # The joint structure is learned, not just the marginals: r = 2a + 3 holds for the samples.
    assert np.std(gen.rewards - (2 * gen.actions[:, 0] + 3)) < 0.2 * data.rewards.std()


def test_samples_never_replace_the_training_store_or_another_folder(trained, tmp_path):
    _, _, root = trained
    cfg = SampleConfig(num_transitions=10, batch_size=10, num_steps=8)
    with pytest.raises(DiffusionError, match="is the model's training store"):
        generate_synther(root / "run", root / "toy.zarr", cfg, overwrite=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(StoreError, match="not a trajectory store"):  # refused before sampling
        generate_synther(root / "run", mine, cfg, overwrite=True)
    assert (mine / "keep.txt").exists()


def test_store_layout_and_provenance(trained, tmp_path):
    _, _, root = trained
    cfg = SampleConfig(num_transitions=700, batch_size=300, num_steps=8, seed=2, segment_length=50)
    out = generate_synther(root / "run", tmp_path / "aug.zarr", cfg)
    gen = out.validate().load()
    assert out.num_transitions == 700 and out.env_id == "ToyStep-v0" and out.ref_scores == (-1.0, 1.0)
    ends = out.episode_ends
    assert out.episode_lengths.max() <= 50
    # Terminals only at segment ends; every other segment end is a timeout; batch ends (300, 600) are cuts.
    assert set((np.flatnonzero(gen.terminals) + 1).tolist()) <= set(ends.tolist())
    np.testing.assert_array_equal(gen.timeouts[ends - 1], ~gen.terminals[ends - 1])
    assert gen.timeouts.sum() + gen.terminals.sum() == out.num_episodes
    assert {300, 600, 700} <= set(ends.tolist())
    np.testing.assert_array_equal(out.meta("seed"), (2 << 32) + out.episode_starts)
    prov = out.provenance
    assert prov["method"] == "SynthER" and prov["transition_level"] is True and prov["num_steps"] == 8
    assert prov["sample"]["num_transitions"] == 700 and prov["model_train_steps"] == 3000


def test_generated_actions_are_clipped_to_the_data_range(trained, tmp_path):
    store, _, root = trained
    data = store.load()
    low, high = data.actions.min(0), data.actions.max(0)
    cfg = SampleConfig(num_transitions=600, batch_size=250, num_steps=8, seed=3)
    raw = generate_synther(root / "run", tmp_path / "raw.zarr", SampleConfig(**{**cfg.__dict__, "clip_actions": False}))
    out = generate_synther(root / "run", tmp_path / "clip.zarr", cfg)
    a, b = raw.load(), out.load()
    outside = ((a.actions < low) | (a.actions > high)).any(1)
    assert outside.any()  # 8 sampler steps leave some actions beyond tanh's range
    np.testing.assert_array_equal(b.actions, np.clip(a.actions, low, high))
    np.testing.assert_array_equal(b.observations, a.observations)  # nothing else changes
    clip = out.provenance["action_clip"]
    assert clip["fraction_clipped"] == pytest.approx(outside.mean())
    np.testing.assert_allclose(clip["low"], low)
    np.testing.assert_allclose(clip["high"], high)
    assert raw.provenance["action_clip"] is None
    # A run made before the range was recorded reads it from its training store, if that still exists.
    old = tmp_path / "old-run"
    shutil.copytree(root / "run", old)
    config = json.loads((old / "config.json").read_text())
    del config["data"]["action_range"]
    (old / "config.json").write_text(json.dumps(config))
    again = generate_synther(old, tmp_path / "again.zarr", cfg).load()
    np.testing.assert_array_equal(again.actions, b.actions)
    config["data"]["path"] = str(tmp_path / "gone.zarr")
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(DiffusionError, match="no-clip-actions"):
        generate_synther(old, tmp_path / "never.zarr", cfg)
    assert not (tmp_path / "never.zarr").exists()


def test_samples_do_not_depend_on_batch_size(trained, tmp_path):
    _, _, root = trained
    a = generate_synther(root / "run", tmp_path / "a.zarr", SampleConfig(num_transitions=90, batch_size=90,
                                                                        num_steps=6, seed=4)).load()
    b = generate_synther(root / "run", tmp_path / "b.zarr", SampleConfig(num_transitions=90, batch_size=32,
                                                                        num_steps=6, seed=4)).load()
    np.testing.assert_allclose(b.observations, a.observations, atol=1e-4)
    np.testing.assert_allclose(b.rewards, a.rewards, atol=1e-4)


def test_load_uses_ema_weights_and_checkpoint_buffers(trained):
    _, trainer, root = trained
    denoiser, norm, edm, config = load_synther(root / "run")
    assert config["model"] == "synther" and norm.transition_dim == 7 and edm.num_steps == 128
    for (name, p), e in zip(denoiser.named_parameters(), trainer.ema, strict=True):
        torch.testing.assert_close(p, e, rtol=0, atol=0, msg=name)
    # The random Fourier frequencies are a buffer (not in the EMA): they must come from the checkpoint.
    torch.testing.assert_close(denoiser.net.embed.fourier.freqs, trainer.denoiser.net.embed.fourier.freqs)
    raw, *_ = load_synther(root / "run", ema=False)
    assert not torch.equal(next(raw.parameters()), next(denoiser.parameters()))


def test_exact_resume(tmp_path):
    store = make_toy(tmp_path / "toy.zarr", episodes=50)
    cfg = tiny_cfg(store.num_transitions, steps=6, batch_size=32, checkpoint_every=3, log_every=2)
    straight = create_synther_trainer(tmp_path / "a", store.path, cfg)
    straight.train()
    broken = create_synther_trainer(tmp_path / "b", store.path, cfg)
    broken.train(until=4)  # killed after step 4: the last checkpoint is step 3
    resumed = create_synther_trainer(tmp_path / "b", None)
    assert resumed.step_count == 3
    resumed.train()
    for p, q in zip(straight.denoiser.parameters(), resumed.denoiser.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for p, q in zip(straight.ema, resumed.ema, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    lines = [json.loads(s) for s in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(s) for s in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6]
    assert [r["loss"] for r in lines] == pytest.approx([r["loss"] for r in ref], rel=1e-6)


def test_bad_input(tmp_path, trained):
    store, _, root = trained
    other = make_toy(tmp_path / "other.zarr", episodes=5, env_id="Other-v0")
    cfg = tiny_cfg(100, steps=2)
    with pytest.raises(StoreError, match="no store"):
        create_synther_trainer(tmp_path / "r", tmp_path / "missing.zarr", cfg)
    with pytest.raises(DiffusionError, match="residual-MLP preset"):
        create_synther_trainer(tmp_path / "r", store.path, tiny_cfg(100, preset="fast-mixer", network_overrides={}))
    with pytest.raises(DiffusionError, match="must be positive"):
        create_synther_trainer(tmp_path / "r", store.path, tiny_cfg(100, steps=0))
    assert not (tmp_path / "r").exists()
    with pytest.raises(DiffusionError, match="is not the data of run"):
        create_synther_trainer(root / "run", other.path)
    with pytest.raises(DiffusionError, match="holds no run to resume"):
        create_synther_trainer(tmp_path / "empty", None)
    (tmp_path / "gta").mkdir()
    (tmp_path / "gta" / "config.json").write_text(json.dumps({"train": {}, "window": {}}))
    with pytest.raises(DiffusionError, match="holds a gta run, not a SynthER run"):
        create_synther_trainer(tmp_path / "gta", store.path)
    with pytest.raises(DiffusionError, match="holds a gta run"):
        generate_synther(tmp_path / "gta", tmp_path / "x.zarr", SampleConfig(num_transitions=4))
    with pytest.raises(DiffusionError, match="not a gta-diffusion run directory"):
        generate_synther(tmp_path / "nope", tmp_path / "x.zarr", SampleConfig(num_transitions=4))
    for bad, msg in [(dict(num_transitions=0), "num_transitions"), (dict(batch_size=0), "batch_size"),
                     (dict(num_steps=1), "num_steps"), (dict(seed=-2), "seed")]:
        with pytest.raises(DiffusionError, match=msg):
            generate_synther(root / "run", tmp_path / "x.zarr", SampleConfig(**bad))
    generate_synther(root / "run", tmp_path / "x.zarr", SampleConfig(num_transitions=4, num_steps=2))
    with pytest.raises(DiffusionError, match="already exists"):
        generate_synther(root / "run", tmp_path / "x.zarr", SampleConfig(num_transitions=4, num_steps=2))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_cli(tmp_path):
    store = make_toy(tmp_path / "toy.zarr", episodes=50)
    runner = CliRunner()
    from gta_diffusion.cli import app

    run = tmp_path / "run"
    args = ["train", "--model", "synther", "--data", str(store.path), "--out", str(run), "--network", "synther-small",
            "--steps", "4", "--log-every", "2", "--checkpoint-every", "2", "--device", "cpu"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "new run" in res.output and "batch 256" in res.output and (run / "checkpoints" / "step-000000004").is_dir()
    res = runner.invoke(app, ["train", "--model", "synther", "--out", str(run), "--steps", "4", "--device", "cpu"])
    assert res.exit_code == 0 and "resuming at step 4" in res.output, res.output
    out = tmp_path / "aug.zarr"
    res = runner.invoke(app, ["augment", "--method", "synther", "--model", str(run), "--out", str(out), "--num-transitions", "30",
                              "--batch-size", "16", "--num-steps", "4", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "30 transitions" in res.output and TrajectoryStore.open(out).validate()
    res = runner.invoke(app, ["augment", "--method", "synther", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "b.zarr")])
    assert res.exit_code == 1 and "not a gta-diffusion run directory" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["augment", "--method", "synther", "--model", str(run), "--out", str(tmp_path / "b.zarr"),
                              "--num-transitions", "0"])
    assert res.exit_code == 1 and "num_transitions must be a positive integer" in res.output
    res = runner.invoke(app, ["train", "--model", "synther", "--data", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output
    # The GTA commands refuse a SynthER run, and each method names what it needs.
    res = runner.invoke(app, ["augment", "--model", str(run), "--data", str(store.path), "--out", str(tmp_path / "g.zarr")])
    assert res.exit_code == 1 and "holds a synther model, not a GTA trajectory model" in res.output
    res = runner.invoke(app, ["augment", "--method", "synther", "--out", str(tmp_path / "g.zarr")])
    assert res.exit_code == 1 and "--method synther needs --model" in res.output
    res = runner.invoke(app, ["augment", "--method", "diffusion-x", "--out", str(tmp_path / "g.zarr")])
    assert res.exit_code == 1 and "unknown method" in res.output
    res = runner.invoke(app, ["train", "--model", "vae", "--data", str(store.path), "--out", str(tmp_path / "v")])
    assert res.exit_code == 1 and "unknown model" in res.output


def test_cli_stop_after_then_resume_equals_an_uninterrupted_run(tmp_path):
    store = make_toy(tmp_path / "toy.zarr", episodes=50)
    runner = CliRunner()
    from gta_diffusion.cli import app

    args = ["--model", "synther", "--network", "synther-small", "--steps", "6", "--batch-size", "16", "--log-every",
            "2", "--checkpoint-every", "4", "--device", "cpu"]
    stopped = tmp_path / "stopped"
    res = runner.invoke(app, ["train", "--data", str(store.path), "--out", str(stopped), *args, "--stop-after", "3"])
    assert res.exit_code == 0 and "stopped (resume with the same --out): 3 steps" in res.output, res.output
    assert latest_checkpoint(stopped).name == "step-000000003"
    res = runner.invoke(app, ["train", "--out", str(stopped), *args])
    assert res.exit_code == 0 and "resuming at step 3" in res.output and "done: 6 steps" in res.output, res.output
    res = runner.invoke(app, ["train", "--data", str(store.path), "--out", str(tmp_path / "full"), *args])
    assert res.exit_code == 0, res.output
    a, b = load_synther(stopped)[0], load_synther(tmp_path / "full")[0]
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    res = runner.invoke(app, ["train", "--data", str(store.path), "--out", str(tmp_path / "x"), *args,
                              "--stop-after", "0"])
    assert res.exit_code == 1 and "--stop-after must be a positive step" in res.output


def test_bench_quick_runs_and_writes_json(tmp_path):
    """tools/bench_synther.py --quick (CPU smoke mode) runs both paths and writes its JSON."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[3] / "tools" / "bench_synther.py"
    out = tmp_path / "quick.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run([sys.executable, str(bench), "--quick", "--budget", "0.2", "--out", str(out)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(out.read_text())
    for name in ("eager-fp32", "fast"):
        row = results["paths"][name]
        assert "train_error" not in row and "sample_error" not in row, row
        assert row["train_steps_per_s"] > 0 and row["sample_transitions_per_s"] > 0
        assert row["network_evaluations"] == 2 * 8 - 1
    assert results["paths"]["fast-graph"]["skipped"].startswith("the whole-step CUDA graph needs")  # CPU here
    assert "sample trans/s" in res.stdout and "fast-graph" in res.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_paths_no_sync_and_fast_path_agrees(tmp_path):
    """On CUDA: a training step and a sampler call never synchronise with the host, and the bf16 + compile
    sampler draws the same distribution as eager fp32 from the same seeds."""
    from dataclasses import replace

    from gta_diffusion.baselines.synther import sample_normalized

    store = make_toy(tmp_path / "toy.zarr")
    trainer = create_synther_trainer(tmp_path / "run", store.path,
                                     tiny_cfg(store.num_transitions, steps=400, checkpoint_every=400), device="cuda")
    trainer.train(until=399)
    torch.cuda.synchronize()
    seeds = torch.arange(256, device="cuda")
    edm_short = replace(trainer.edm, num_steps=8)
    net = trainer.denoiser.eval()
    d = trainer.windows.norm.transition_dim
    sample_normalized(net, d, edm_short, seeds)  # warm-up outside the sync check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.step()
        sample_normalized(net, d, edm_short, seeds)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.save()
    eager = generate_synther(tmp_path / "run", tmp_path / "a.zarr",
                             SampleConfig(num_transitions=4000, batch_size=2000, num_steps=32), device="cuda").load()
    fast = generate_synther(tmp_path / "run", tmp_path / "b.zarr",
                            SampleConfig(num_transitions=4000, batch_size=2000, num_steps=32, bf16=True, compile=True),
                            device="cuda").load()
    x, y = transition_vectors(eager), transition_vectors(fast)
    scale = transition_vectors(store.load()).std(0)[:-1]
    assert np.all(np.abs(x.mean(0) - y.mean(0))[:-1] / scale < 0.1)
    assert np.all(np.abs(x.std(0) - y.std(0))[:-1] / scale < 0.1)


def test_samples_carry_the_training_stores_env_settings(tmp_path):
    # A run trained on SynthER's samples alone evaluates in the env the original data came from: PointMaze's
    # env_kwargs (goal and episode settings) and its Dict observation layout travel with the samples.
    base = make_toy(tmp_path / "plain.zarr", episodes=40)
    data = base.load()
    layout = [{"key": "observation", "start": 0, "stop": 1}, {"key": "desired_goal", "start": 1, "stop": 2}]
    store = write_store(tmp_path / "toy.zarr", data, base.episode_ends, env_id="ToyStep-v0", ref_min_score=-1.0,
                        ref_max_score=1.0, observation_layout=layout,
                        attrs={"env_kwargs": {"continuing_task": True, "max_episode_steps": 60}})
    create_synther_trainer(tmp_path / "run", store.path, tiny_cfg(store.num_transitions, steps=2,
                                                                  checkpoint_every=2)).train()
    out = generate_synther(tmp_path / "run", tmp_path / "samples.zarr", SampleConfig(num_transitions=50,
                                                                                       batch_size=50, num_steps=2))
    assert out.attrs["env_kwargs"] == {"continuing_task": True, "max_episode_steps": 60}
    assert out.attrs["observation_layout"] == layout
    # runs recorded before the config kept them: read from the training store, if it is still there
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    for key in ("env_kwargs", "observation_layout"):
        del config["data"][key]
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    old = generate_synther(tmp_path / "run", tmp_path / "old.zarr", SampleConfig(num_transitions=50, batch_size=50,
                                                                                  num_steps=2))
    assert old.attrs["env_kwargs"]["max_episode_steps"] == 60 and old.attrs["observation_layout"] == layout
