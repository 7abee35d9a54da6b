"""Augmentation end to end: partial noising limits, the penalty, seeds, provenance, ablations, bad input,
and that a trained model follows its return condition (GTA Sec. 4.2, 4.4)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from gta_diffusion.augmentation import (
    AugmentConfig,
    Augmenter,
    amplify,
    augment,
    choose_sources,
    clip_actions,
    window_seeds,
)
from gta_diffusion.data import WindowConfig, WindowSet
from gta_diffusion.errors import DiffusionError
from gta_diffusion.training import TrainConfig, Trainer, load_model

TINY = {"dim": 8, "dim_mults": (1, 2), "emb_dim": 16, "mid_blocks": 1}


@pytest.fixture(scope="module")
def model(tmp_path_factory, make_toy_store):
    """A tiny model trained for a few steps (mechanics only), with the penalty in its reward channel so that
    the penalty-removal path is exercised."""
    root = tmp_path_factory.mktemp("aug")
    store_path, run = root / "toy.zarr", root / "run"
    make_toy_store(store_path)
    cfg = TrainConfig(preset="fast-mixer-small", network_overrides=TINY, steps=20, batch_size=32, warmup_steps=2,
                      log_every=10, checkpoint_every=20)
    Trainer.create(run, store_path, cfg, WindowConfig(horizon=4, penalty_in_reward_channel=True)).train()
    return run, store_path


def _quick(**kw):
    return AugmentConfig(**{"num_transitions": 100, "batch_size": 16, "num_steps": 8, **kw})


def test_amplify_rule():
    y = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(amplify(y, 1.3), [-1.4, 0.0, 3.9])
    assert torch.allclose(amplify(torch.tensor(y), 1.3), torch.tensor([-1.4, 0.0, 3.9], dtype=torch.float64))


def test_mu_to_zero_returns_the_source_windows(tmp_path, model):
    run, store_path = model
    from gta_data import TrajectoryStore

    out = augment(run, store_path, tmp_path / "aug.zarr", _quick(mu=1e-6, num_steps=128, num_transitions=62))
    src = TrajectoryStore.open(store_path).load()
    gen = out.load()
    starts = out.meta("source_start")
    assert out.num_transitions == 62 and out.num_episodes == 16  # 15 full windows + one truncated to 2
    rows = np.concatenate([s + np.arange(n) for s, n in zip(starts, out.episode_lengths, strict=True)])
    np.testing.assert_allclose(gen.observations, src.observations[rows], atol=0.02)
    np.testing.assert_allclose(gen.next_observations, src.next_observations[rows], atol=0.02)
    np.testing.assert_allclose(gen.actions, src.actions[rows], atol=0.05)
    # The fixture's reward channel holds the penalised reward (std ~14), so sigma_min noise is larger here;
    # terminal rows included: no -100 left.
    np.testing.assert_allclose(gen.rewards, src.rewards[rows], atol=0.15)
    np.testing.assert_array_equal(gen.terminals, src.terminals[rows])
    # F.6 metadata: the condition of each segment is alpha x its source window's return (Eq. 8).
    from gta_diffusion.data import WindowConfig, condition_rewards, discounted_returns, resolve_window

    source = TrajectoryStore.open(store_path)
    returns = discounted_returns(condition_rewards(src, resolve_window(WindowConfig(), source.env_id)),
                                 source.episode_ends, 0.99)
    np.testing.assert_allclose(out.meta("source_return"), returns[starts], rtol=1e-6)
    expected = np.where(returns[starts] > 0, 1.3 * returns[starts], 0.7 * returns[starts])
    np.testing.assert_allclose(out.meta("condition"), expected, rtol=1e-6)


def test_penalty_never_reaches_the_augmented_store(tmp_path, model):
    run, store_path = model
    from gta_data import TrajectoryStore

    data = TrajectoryStore.open(store_path).load()
    cfg = _quick(mu=0.3, num_transitions=400, alpha=1.2)
    out = augment(run, store_path, tmp_path / "aug.zarr", cfg)
    gen = out.load()
    assert gen.terminals.any(), "the test needs windows that end in a terminal"
    assert gen.rewards.min() > -50 and data.rewards.min() > -2
    # Terminal rows of the generated data look like ordinary rewards, not like r - 100.
    assert np.abs(gen.rewards[gen.terminals]).max() < 10


def test_clip_actions_counts_and_clips_per_dimension():
    from gta_data import Transitions

    acts = np.array([[0.5, 2.0], [-3.0, 0.0], [0.1, 0.2], [1.0, -1.0]], dtype=np.float32)
    tr = Transitions(np.zeros((4, 1)), acts.copy(), np.zeros(4), np.zeros((4, 1)), np.zeros(4), np.zeros(4))
    frac = clip_actions(tr, np.array([-1.0, -0.5]), np.array([1.0, 1.0]))
    assert frac == 0.75  # rows 0 (dim 1 high), 1 (dim 0 low) and 3 (dim 1 low)
    np.testing.assert_array_equal(tr.actions, np.float32([[0.5, 1.0], [-1.0, 0.0], [0.1, 0.2], [1.0, -0.5]]))
    assert tr.actions.dtype == np.float32


def test_generated_actions_are_clipped_to_the_source_range(tmp_path, model):
    run, store_path = model
    from gta_data import TrajectoryStore

    src = TrajectoryStore.open(store_path).load()
    low, high = src.actions.min(0), src.actions.max(0)
    # From pure noise with 8 steps, the 20-step model leaves actions outside the data's range.
    raw = augment(run, store_path, tmp_path / "raw.zarr", _quick(mu=1.0, clip_actions=False))
    clipped = augment(run, store_path, tmp_path / "clipped.zarr", _quick(mu=1.0))
    assert raw.provenance["action_clip"] is None
    outside = ((raw.load().actions < low) | (raw.load().actions > high)).any(1)
    assert outside.any(), "the test needs generated actions outside the source range"
    info = clipped.provenance["action_clip"]
    np.testing.assert_allclose(info["low"], low)
    np.testing.assert_allclose(info["high"], high)
    assert info["fraction_clipped"] == pytest.approx(outside.mean())
    # Same seeds, same windows: clipping is the only difference.
    np.testing.assert_array_equal(clipped.load().actions, np.clip(raw.load().actions, low, high))
    np.testing.assert_array_equal(clipped.load().observations, raw.load().observations)


def test_store_metadata_and_per_window_seeds(tmp_path, model):
    run, store_path = model
    cfg = _quick(mu=0.5, num_transitions=64, seed=3)
    a = augment(run, store_path, tmp_path / "a.zarr", cfg)
    np.testing.assert_array_equal(a.meta("seed"), window_seeds(3, 16))
    prov = a.provenance
    assert prov["augment"]["mu"] == 0.5 and prov["augment"]["alpha"] == 1.3
    assert prov["start_index"] == 4 and prov["source_store"].endswith("toy.zarr") and "model_dir" in prov
    assert prov["model_step"] == prov["model_train_steps"]  # the fixture's model finished its training
    assert a.ref_scores == (-12.0, 12.0)
    # A window depends on its seed only, not on the batch it was generated in.
    b = augment(run, store_path, tmp_path / "b.zarr", _quick(mu=0.5, num_transitions=64, seed=3, batch_size=5))
    np.testing.assert_allclose(a.load().observations, b.load().observations, atol=1e-5)
    c = augment(run, store_path, tmp_path / "c.zarr", _quick(mu=0.5, num_transitions=64, seed=4))
    assert not np.allclose(a.load().observations, c.load().observations)


@pytest.mark.parametrize("kw", [
    {"conditioning": "fixed", "fixed_return": 5.0},
    {"conditioning": "none"},
    {"conditioning": "inpaint", "alpha": 1.5},
    {"mu": 1.0},
    {"reweight": "bins", "num_bins": 5},
    {"reweight": "episodes", "success_weight": 3.0},
])
def test_ablation_switches_run(tmp_path, model, kw):
    run, store_path = model
    out = augment(run, store_path, tmp_path / "x.zarr", _quick(**kw))
    assert out.num_transitions == 100
    assert np.isfinite(out.load().observations).all()


def test_inpainting_holds_the_amplified_rewards(model):
    run, store_path = model
    from gta_data import TrajectoryStore

    store = TrajectoryStore.open(store_path)
    denoiser, norm, wcfg, edm, _ = load_model(run)
    ws = WindowSet(store.load(), store.episode_ends, norm, wcfg)
    aug = Augmenter(denoiser, norm, wcfg, edm, _quick(conditioning="inpaint", alpha=1.5, mu=0.5))
    starts = ws.starts_np[:6]
    gen = aug.generate(ws, starts, window_seeds(0, 6))  # [6, H+1, D] in original units
    src = norm.denormalize(ws.gather(torch.from_numpy(starts)).numpy())
    np.testing.assert_allclose(gen[:, :4, 2], amplify(src[:, :4, 2], 1.5), atol=1e-4)


def test_horizon_one(tmp_path, make_toy_store):
    store = make_toy_store(tmp_path / "t.zarr")
    cfg = TrainConfig(preset="fast-mixer-small", network_overrides=TINY, steps=2, batch_size=8, warmup_steps=1,
                      log_every=1, checkpoint_every=2)
    Trainer.create(tmp_path / "run", store.path, cfg, WindowConfig(horizon=1)).train()
    out = augment(tmp_path / "run", store.path, tmp_path / "a.zarr", _quick(num_transitions=7))
    assert out.num_transitions == 7 and out.num_episodes == 7


def test_bad_input_is_a_one_line_error(tmp_path, model, make_toy_store):
    run, store_path = model
    for mu in (0.0, -0.1, 1.5):
        with pytest.raises(DiffusionError, match="mu must be in"):
            augment(run, store_path, tmp_path / "m.zarr", _quick(mu=mu))
    other = make_toy_store(tmp_path / "other.zarr", env_id="OtherEnv-v0")
    with pytest.raises(DiffusionError, match="OtherEnv-v0 data but the model was trained on ToyLine-v0"):
        augment(run, other.path, tmp_path / "o.zarr", _quick())
    from gta_data import Transitions, write_store

    z = np.zeros((20, 2), np.float32)
    wide = write_store(tmp_path / "wide.zarr", Transitions(z, z[:, :1], z[:, 0], z, np.zeros(20, bool),
                                                           np.zeros(20, bool)), np.array([20]), env_id="ToyLine-v0")
    with pytest.raises(DiffusionError, match="obs_dim 2"):
        augment(run, wide.path, tmp_path / "w.zarr", _quick())
    with pytest.raises(DiffusionError, match="is the source store"):
        augment(run, store_path, store_path, _quick(), overwrite=True)
    shutil.copytree(store_path, tmp_path / "taken.zarr")
    with pytest.raises(DiffusionError, match="already exists"):
        augment(run, store_path, tmp_path / "taken.zarr", _quick())
    with pytest.raises(DiffusionError, match="fixed_return"):
        augment(run, store_path, tmp_path / "f.zarr", _quick(conditioning="fixed"))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # nothing half-written


def test_source_choice_is_deterministic_and_reweighted(model):
    run, store_path = model
    from gta_data import TrajectoryStore

    store = TrajectoryStore.open(store_path)
    data = store.load()
    _, norm, wcfg, _, _ = load_model(run)
    ws = WindowSet(data, store.episode_ends, norm, wcfg)
    a = choose_sources(ws, data.rewards, AugmentConfig(seed=1), 500)
    np.testing.assert_array_equal(a, choose_sources(ws, data.rewards, AugmentConfig(seed=1), 500))
    hi = choose_sources(ws, data.rewards, AugmentConfig(seed=1, reweight="bins", num_bins=10, q=0.05), 2000)
    assert ws.cond_np[hi].mean() > ws.cond_np[a].mean()


def test_generated_return_follows_the_condition(tmp_path, make_toy_store):
    """A small model trained < 60 s on the toy data: generated rewards rise with the conditioned return."""
    store = make_toy_store(tmp_path / "toy.zarr", episodes=64)
    cfg = TrainConfig(preset="fast-mixer-small", network_overrides={"dim": 16, "dim_mults": (1, 2), "emb_dim": 32},
                      steps=400, batch_size=64, warmup_steps=20, lr=1e-3, log_every=100, checkpoint_every=400)
    Trainer.create(tmp_path / "run", store.path, cfg, WindowConfig(horizon=4, cond_scale=0.1)).train()
    denoiser, norm, wcfg, edm, _ = load_model(tmp_path / "run")
    ws = WindowSet(store.load(), store.episode_ends, norm, wcfg)
    targets = [-6.0, -3.0, 0.0, 3.0, 6.0]  # returns to the end of the episode, in reward units
    means = []
    for i, target in enumerate(targets):
        aug = Augmenter(denoiser, norm, wcfg, edm,
                        AugmentConfig(mu=1.0, conditioning="fixed", fixed_return=target, num_steps=24, batch_size=128))
        gen = aug.generate(ws, ws.starts_np[:128], window_seeds(i, 128))
        means.append(float(gen[:, :4, 2].mean()))
    corr = np.corrcoef(targets, means)[0, 1]
    assert corr > 0.8, (means, corr)
    assert means[-1] - means[0] > 0.3, means
