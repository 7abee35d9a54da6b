"""Windows, conditions, normalisation and the windows -> transitions round trip (GTA A.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gta_data import TrajectoryStore, Transitions, gather_windows
from gta_diffusion.data import (
    WindowConfig,
    WindowSet,
    condition_rewards,
    discounted_returns,
    fit_normalizer,
    loss_mask,
    resolve_window,
    windows_to_transitions,
)
from gta_diffusion.errors import DiffusionError


def _reference_returns(rewards, ends, gamma):
    out, start = np.zeros(len(rewards)), 0
    for end in ends:
        for t in range(start, end):
            out[t] = sum(gamma ** (i - t) * float(rewards[i]) for i in range(t, end))
        start = end
    return out


def test_discounted_returns_match_float64_reference():
    rng = np.random.default_rng(1)
    ends = np.array([3, 10, 11, 25])
    rewards = rng.standard_normal(25)
    got = discounted_returns(rewards, ends, 0.99)
    np.testing.assert_allclose(got, _reference_returns(rewards, ends, 0.99), rtol=1e-12, atol=1e-12)
    # Analytic case: constant reward 1 over an episode of length L: G_t = (1 - g^(L-t)) / (1 - g).
    g = discounted_returns(np.ones(5), np.array([5]), 0.5)
    np.testing.assert_allclose(g, (1 - 0.5 ** (5 - np.arange(5))) / 0.5)


def test_condition_uses_terminal_penalty_and_scale(toy_store):
    data = toy_store.load()
    cfg = WindowConfig(horizon=4, cond_scale=0.01)
    norm = fit_normalizer(data, toy_store.episode_ends, cfg, toy_store.env_id)
    ws = WindowSet(data, toy_store.episode_ends, norm, cfg)
    penalised = data.rewards.astype(np.float64) - 100.0 * data.terminals
    expected = 0.01 * _reference_returns(penalised, toy_store.episode_ends, 0.99)
    np.testing.assert_allclose(ws.cond_np, expected, rtol=1e-5, atol=1e-6)
    # A window starting 3 rows before a terminal sees the penalty discounted by 0.99^3.
    term = int(np.flatnonzero(data.terminals)[0])
    assert ws.cond_np[term - 3] < -0.9


@pytest.mark.parametrize("env_id, penalty", [
    ("Hopper-v5", -100.0), ("walker2d-medium-v2", -100.0), ("HalfCheetah-v5", -100.0),
    ("PointMaze_UMaze-v3", 0.0), ("AntMaze_Medium-v5", 0.0), ("antmaze-umaze-v2", 0.0), ("FrankaKitchen-v1", 0.0),
])
def test_terminal_penalty_only_where_a_terminal_is_a_failure(env_id, penalty):
    # A.1's trick is for falls (Hopper, Walker2d); a maze or kitchen episode ends at its goal (the authors' code
    # turns the penalty off for mazes). An explicit value is kept.
    assert resolve_window(WindowConfig(), env_id).terminal_penalty == penalty
    assert resolve_window(WindowConfig(terminal_penalty=-5.0), env_id).terminal_penalty == -5.0
    assert resolve_window(WindowConfig(terminal_penalty=0.0), "Hopper-v5").terminal_penalty == 0.0


def test_goal_task_conditions_carry_no_penalty(toy_store):
    data = toy_store.load()
    norm = fit_normalizer(data, toy_store.episode_ends, WindowConfig(horizon=4), "PointMaze_UMaze-v3")
    ws = WindowSet(data, toy_store.episode_ends, norm, WindowConfig(horizon=4))
    assert ws.cfg.terminal_penalty == 0.0
    np.testing.assert_allclose(ws.cond_np, 0.01 * _reference_returns(data.rewards, toy_store.episode_ends, 0.99),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(DiffusionError, match="resolve_window"):
        condition_rewards(data, WindowConfig())


def test_windows_round_trip_to_transitions(toy_store):
    data = toy_store.load()
    cfg = WindowConfig(horizon=5)
    norm = fit_normalizer(data, toy_store.episode_ends, cfg, toy_store.env_id)
    ws = WindowSet(data, toy_store.episode_ends, norm, cfg)
    starts = ws.starts_np[::7]
    x = ws.gather(torch.from_numpy(starts)).numpy()  # [B, H+1, D] z-scored
    assert x.shape == (len(starts), 6, 3)
    np.testing.assert_array_equal(x[:, -1, 1:], 0.0)  # padding of the last row
    ref = gather_windows(data, starts, 5)
    terminals = ref.terminals
    tr = windows_to_transitions(norm.denormalize(x), norm, cfg, terminals)
    rows = (starts[:, None] + np.arange(5)).reshape(-1)
    np.testing.assert_allclose(tr.observations, data.observations[rows], atol=1e-5)
    np.testing.assert_allclose(tr.next_observations, data.next_observations[rows], atol=1e-5)
    np.testing.assert_allclose(tr.actions, data.actions[rows], atol=1e-5)
    np.testing.assert_allclose(tr.rewards, data.rewards[rows], atol=1e-5)
    np.testing.assert_array_equal(tr.terminals, data.terminals[rows])
    # Every segment ends with a timeout unless it ends with a true terminal.
    last = tr.timeouts.reshape(-1, 5)[:, -1] | tr.terminals.reshape(-1, 5)[:, -1]
    assert last.all() and not tr.timeouts.reshape(-1, 5)[:, :-1].any()


def test_penalty_in_reward_channel_is_removed_from_generated_rewards(toy_store):
    data = toy_store.load()
    cfg = WindowConfig(horizon=4, penalty_in_reward_channel=True)
    norm = fit_normalizer(data, toy_store.episode_ends, cfg, toy_store.env_id)
    ws = WindowSet(data, toy_store.episode_ends, norm, cfg)
    term = int(np.flatnonzero(data.terminals)[0])
    starts = np.array([term - 3])
    x = norm.denormalize(ws.gather(torch.from_numpy(starts)).numpy())
    assert x[0, 3, 2] < -98  # the model's reward channel holds the penalised reward ...
    tr = windows_to_transitions(x, norm, cfg, data.terminals[starts[:, None] + np.arange(4)])
    np.testing.assert_allclose(tr.rewards, data.rewards[term - 3 : term + 1], atol=1e-3)  # ... the store does not
    assert tr.terminals[-1] and not tr.timeouts[-1]


def test_short_episodes_are_skipped_and_counted(tmp_path, make_toy_store):
    store = make_toy_store(tmp_path / "s.zarr", episodes=6, short=3)
    data = store.load()
    norm = fit_normalizer(data, store.episode_ends, WindowConfig(horizon=4), store.env_id)
    assert (norm.skipped_episodes, norm.skipped_transitions) == (3, 6)
    ws = WindowSet(data, store.episode_ends, norm, WindowConfig(horizon=4))
    assert len(ws) == 6 * (12 - 4 + 1)
    with pytest.raises(DiffusionError, match="horizon=13"):
        fit_normalizer(data, store.episode_ends, WindowConfig(horizon=13), store.env_id)


def test_horizon_one_and_loss_mask(toy_store):
    data = toy_store.load()
    cfg = WindowConfig(horizon=1)
    norm = fit_normalizer(data, toy_store.episode_ends, cfg, toy_store.env_id)
    ws = WindowSet(data, toy_store.episode_ends, norm, cfg)
    assert len(ws) == toy_store.num_transitions
    x, c = ws.sample(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 2, 3) and c.shape == (8,)
    mask = loss_mask(norm, 1)
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_normalizer_z_scores(toy_store):
    data = toy_store.load()
    norm = fit_normalizer(data, toy_store.episode_ends, WindowConfig(horizon=4), toy_store.env_id)
    np.testing.assert_allclose(norm.mean[1], data.actions.mean(), rtol=1e-6)
    np.testing.assert_allclose(norm.std[2], data.rewards.std(), rtol=1e-5)
    states = np.concatenate([data.observations, data.next_observations])
    np.testing.assert_allclose(norm.mean[0], states.mean(), rtol=1e-5)


def test_dims_mismatch_is_an_error(toy_store, tmp_path):
    data = toy_store.load()
    norm = fit_normalizer(data, toy_store.episode_ends, WindowConfig(horizon=4), toy_store.env_id)
    other = Transitions(observations=np.zeros((12, 2)), actions=np.zeros((12, 1)), rewards=np.zeros(12),
                        next_observations=np.zeros((12, 2)), terminals=np.zeros(12, bool), timeouts=np.zeros(12, bool))
    with pytest.raises(DiffusionError, match="obs_dim 2"):
        WindowSet(other, np.array([12]), norm, WindowConfig(horizon=4))
    assert isinstance(toy_store, TrajectoryStore)
