import numpy as np
import pytest

from gta_data import RecipeError, normalized_score
from gta_data.recipes import list_recipes, make_dataset
from gta_data.recipes.pointmaze import GOAL_RADIUS, q_iteration


def test_registry():
    names = set(list_recipes())
    assert {"random", "pointmaze-umaze", "pointmaze-medium", "pointmaze-large"} <= names
    with pytest.raises(RecipeError, match="unknown recipe"):
        make_dataset("nope", "x.zarr")


def test_random_recipe_is_deterministic_and_d4rl_like(tmp_path):
    a = make_dataset("random", tmp_path / "a.zarr", size=1200, seed=3, env_id="HalfCheetah-v5")
    b = make_dataset("random", tmp_path / "b.zarr", size=1200, seed=3, env_id="HalfCheetah-v5")
    c = make_dataset("random", tmp_path / "c.zarr", size=1200, seed=4, env_id="HalfCheetah-v5")
    da, db, dc = a.load(), b.load(), c.load()
    np.testing.assert_array_equal(da.observations, db.observations)
    np.testing.assert_array_equal(da.actions, db.actions)
    assert not np.array_equal(da.actions, dc.actions)
    assert a.num_transitions == 1200 and list(a.episode_ends) == [1000, 1200]
    assert da.timeouts[999] and da.timeouts[-1] and not da.terminals.any()
    # Consecutive transitions chain: s'_t == s_{t+1} inside an episode.
    np.testing.assert_array_equal(da.next_observations[:999], da.observations[1:1000])
    assert (np.abs(da.actions) <= 1).all()
    # A random HalfCheetah policy scores near 0 on the D4RL scale (random reference = 0).
    assert abs(normalized_score(a, da.rewards[:1000].sum())) < 5


def test_random_recipe_records_true_terminals(tmp_path):
    store = make_dataset("random", tmp_path / "h.zarr", size=300, seed=0, env_id="Hopper-v5")
    data = store.load()
    assert data.terminals.sum() >= 1  # random Hopper falls within a few dozen steps
    assert (np.flatnonzero(data.terminals) + 1 == store.episode_ends[: data.terminals.sum()]).all()


def test_random_recipe_needs_env(tmp_path):
    with pytest.raises(RecipeError, match="--env"):
        make_dataset("random", tmp_path / "x.zarr", size=10)
    with pytest.raises(RecipeError, match="cannot make environment"):
        make_dataset("random", tmp_path / "x.zarr", size=10, env_id="NoSuchEnv-v0")
    assert not (tmp_path / "x.zarr").exists()


def test_options_a_recipe_does_not_take_are_refused(tmp_path):
    # gta-data make pointmaze-umaze --env ... used to ignore --env silently.
    with pytest.raises(RecipeError, match="recipe 'pointmaze-umaze' takes no --env"):
        make_dataset("pointmaze-umaze", tmp_path / "x.zarr", size=10, env_id="HalfCheetah-v5")
    with pytest.raises(RecipeError, match=r"takes no --policy-file \(its options: --env\)"):
        make_dataset("random", tmp_path / "x.zarr", size=10, env_id="Hopper-v5", policy_file="p.npz")
    # each locomotion kind takes the file it reads: random none, medium(-expert)/expert the policy file,
    # medium-replay the replay file
    with pytest.raises(RecipeError, match=r"'hopper-random' takes no --policy-file \(its options: none\)"):
        make_dataset("hopper-random", tmp_path / "x.zarr", size=10, policy_file="p.npz")
    with pytest.raises(RecipeError, match=r"'hopper-medium' takes no --replay-file \(its options: --policy-file\)"):
        make_dataset("hopper-medium", tmp_path / "x.zarr", size=10, replay_file="r.npz")
    with pytest.raises(RecipeError, match="'hopper-medium-replay' takes no --policy-file"):
        make_dataset("hopper-medium-replay", tmp_path / "x.zarr", size=10, policy_file="p.npz")
    assert not (tmp_path / "x.zarr").exists()
    # options left at None are no options (the CLI passes both locomotion files when one is given)
    assert make_dataset("random", tmp_path / "y.zarr", size=5, env_id="Hopper-v5", policy_file=None).num_transitions == 5


def test_q_iteration_values_decrease_with_distance():
    free = np.array([[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]], bool)
    value = q_iteration(free, (1, 1), gamma=0.9)
    # U-maze path from (3,1) to (1,1): (3,1)->(3,2)->(3,3)->(2,3)->(1,3)->(1,2)->(1,1): 6 moves.
    assert value[1, 1] == 1.0
    assert value[3, 1] == pytest.approx(0.9 ** 6)
    assert value[1, 2] > value[1, 3] > value[2, 3] > value[3, 3]
    assert np.isneginf(value[0, 0])


@pytest.mark.parametrize("name", ["pointmaze-umaze", "pointmaze-medium", "pointmaze-large"])
def test_pointmaze_reaches_goals(tmp_path, name):
    store = make_dataset(name, tmp_path / "m.zarr", size=3000, seed=0)
    data = store.load()
    assert store.obs_dim == 6 and store.act_dim == 2
    # Sparse D4RL/gymnasium-robotics reward: 1 exactly when the next position is within the goal radius
    # of the goal in force at that step, which the step's observation shows.
    dist = np.linalg.norm(data.next_observations[:, :2] - data.observations[:, 4:6], axis=1)
    np.testing.assert_array_equal(data.observations[:, 4:6], data.next_observations[:, 4:6])
    np.testing.assert_array_equal(data.rewards, (dist <= GOAL_RADIUS).astype(np.float32))
    # The controller reaches goals: most full episodes collect reward, and goals get re-drawn.
    returns = store.episode_returns(data)
    assert (returns[:-1] > 0).mean() >= 0.75
    # As in D4RL, the point settles on a goal (several rewarded steps) before the goal moves.
    assert data.rewards.sum() > 3 * (len(np.unique(data.observations[:, 4:6], axis=0)) - store.num_episodes)
    assert len(np.unique(data.observations[:, 4:6], axis=0)) > store.num_episodes
    assert (np.abs(data.actions) <= 1).all()
    # Deterministic for a seed.
    again = make_dataset(name, tmp_path / "m2.zarr", size=3000, seed=0).load()
    np.testing.assert_array_equal(again.actions, data.actions)


def test_sizes_beyond_what_a_recipe_can_make_are_refused_up_front(tmp_path, monkeypatch):
    import time

    from typer.testing import CliRunner

    import gta_data.recipes as recipes
    from gta_data.cli import app

    start = time.perf_counter()
    result = CliRunner().invoke(app, ["make", "random", "--env", "HalfCheetah-v5", "--size", "1000000000000",
                                      "--out", str(tmp_path / "big.zarr")])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0, result.output
    assert "above the 100,000,000 transitions" in result.output
    assert time.perf_counter() - start < 30 and list(tmp_path.iterdir()) == []
    # With --minari-id the whole store is held in memory by the export: the machine's memory bounds the size.
    monkeypatch.setattr(recipes.os, "sysconf", lambda name: {"SC_PHYS_PAGES": 256, "SC_PAGE_SIZE": 4096}[name])
    with pytest.raises(RecipeError, match="export would hold about"):
        make_dataset("pointmaze-umaze", tmp_path / "pm.zarr", size=20_000, minari_id="test/pointmaze/big-v0")
    assert [p.name for p in tmp_path.iterdir()] == ["minari"]  # the datasets folder, nothing else
