import numpy as np
import pytest

from gta_data import RecipeError, Transitions, write_store
from gta_data.policies import random_actor, save_policy_file
from gta_data.recipes import list_recipes, make_dataset
from gta_data.scores import D4RL_REFERENCE_SCORES

DIMS = {"HalfCheetah-v5": (17, 6), "Hopper-v5": (11, 3)}


@pytest.fixture
def policy_file(tmp_path):
    def make(env_id):
        obs_dim, act_dim = DIMS[env_id]
        actors = {"medium": random_actor(obs_dim, act_dim, (16, 16), seed=0, step=100, eval_return=1.0),
                  "expert": random_actor(obs_dim, act_dim, (16, 16), seed=1, step=900, eval_return=3.0)}
        return save_policy_file(tmp_path / f"{env_id}.npz", env_id, actors)

    return make


def test_all_locomotion_recipes_registered():
    names = set(list_recipes())
    for env in ("halfcheetah", "hopper", "walker2d"):
        for kind in ("random", "medium", "medium-replay", "expert", "medium-expert"):
            assert f"{env}-{kind}" in names


def test_medium_is_deterministic_valid_and_scored(tmp_path, policy_file):
    path = policy_file("HalfCheetah-v5")
    a = make_dataset("halfcheetah-medium", tmp_path / "a.zarr", size=1200, seed=5, policy_file=path)
    b = make_dataset("halfcheetah-medium", tmp_path / "b.zarr", size=1200, seed=5, policy_file=path)
    c = make_dataset("halfcheetah-medium", tmp_path / "c.zarr", size=1200, seed=6, policy_file=path)
    da, db, dc = a.load(), b.load(), c.load()
    for key, value in da.arrays().items():
        np.testing.assert_array_equal(value, db.arrays()[key])
    assert not np.array_equal(da.actions, dc.actions)
    assert (a.env_id, a.obs_dim, a.act_dim) == ("HalfCheetah-v5", 17, 6)
    assert a.ref_scores == pytest.approx(D4RL_REFERENCE_SCORES["halfcheetah"])
    assert list(a.episode_ends) == [1000, 1200] and da.timeouts[999] and da.timeouts[-1]
    np.testing.assert_array_equal(da.next_observations[:999], da.observations[1:1000])
    # Stochastic actions: not the policy's deterministic mean.
    from gta_data.policies import load_policy_file

    actor = load_policy_file(path).actors["medium"]
    assert not np.allclose(da.actions, actor.act(da.observations))
    assert (np.abs(da.actions) <= 1).all()
    assert a.provenance["policy_info"] == {"step": 100, "eval_return": 1.0}
    assert a.provenance["d4rl_name"] == "halfcheetah-medium"


def test_medium_expert_is_medium_plus_expert(tmp_path, policy_file):
    path = policy_file("Hopper-v5")
    me = make_dataset("hopper-medium-expert", tmp_path / "me.zarr", size=301, seed=2, policy_file=path)
    m = make_dataset("hopper-medium", tmp_path / "m.zarr", size=150, seed=2, policy_file=path)
    e = make_dataset("hopper-expert", tmp_path / "e.zarr", size=151, seed=2, policy_file=path)
    joined = Transitions.concatenate([m.load(), e.load()])
    for key, value in me.load().arrays().items():
        np.testing.assert_array_equal(value, joined.arrays()[key])
    np.testing.assert_array_equal(me.episode_ends, np.concatenate([m.episode_ends, 150 + e.episode_ends]))
    assert me.ref_scores == pytest.approx(D4RL_REFERENCE_SCORES["hopper"])
    assert me.load().terminals.any()  # a random-weight hopper falls


def test_missing_policy_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GTA_POLICY_DIR", str(tmp_path / "nowhere"))
    for name in ("walker2d-medium", "walker2d-expert", "walker2d-medium-expert", "walker2d-medium-replay"):
        with pytest.raises(RecipeError) as info:
            make_dataset(name, tmp_path / "x.zarr", size=10)
        message = str(info.value)
        assert "\n" not in message and "tools/train_behaviour_policies.py --env walker2d" in message
        assert str(tmp_path / "nowhere") in message
    assert not (tmp_path / "x.zarr").exists()


def test_wrong_env_policy(tmp_path, policy_file):
    path = policy_file("Hopper-v5")
    with pytest.raises(RecipeError, match="not HalfCheetah-v5"):
        make_dataset("halfcheetah-expert", tmp_path / "x.zarr", size=10, policy_file=path)


def test_medium_replay_copies_the_replay_store(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    obs = rng.normal(size=(n + 1, 11)).astype(np.float32)
    terminals = np.zeros(n, bool)
    terminals[19] = True
    replay = Transitions(observations=obs[:-1], actions=rng.uniform(-1, 1, (n, 3)), rewards=rng.normal(size=n),
                         next_observations=obs[1:], terminals=terminals, timeouts=np.eye(n, dtype=bool)[-1])
    write_store(tmp_path / "r.zarr", replay, np.array([20, 50]), env_id="Hopper-v5",
                provenance={"source": "sac replay"})
    full = make_dataset("hopper-medium-replay", tmp_path / "full.zarr", replay_store=tmp_path / "r.zarr")
    np.testing.assert_array_equal(full.load().observations, replay.observations)
    assert list(full.episode_ends) == [20, 50]
    assert full.ref_scores == pytest.approx(D4RL_REFERENCE_SCORES["hopper"])
    assert full.provenance["replay_provenance"]["source"] == "sac replay"
    cut = make_dataset("hopper-medium-replay", tmp_path / "cut.zarr", size=30, replay_store=tmp_path / "r.zarr")
    data = cut.load()
    assert list(cut.episode_ends) == [20, 30] and data.timeouts[-1] and data.terminals[19]
    np.testing.assert_array_equal(data.actions, replay.actions[:30].astype(np.float32))
    with pytest.raises(RecipeError, match="not HalfCheetah-v5"):
        make_dataset("halfcheetah-medium-replay", tmp_path / "x.zarr", replay_store=tmp_path / "r.zarr")


def test_medium_as_minari_dataset(tmp_path, policy_file):
    minari = pytest.importorskip("minari")
    path = policy_file("Hopper-v5")
    store = make_dataset("hopper-medium", tmp_path / "m.zarr", size=250, seed=0, policy_file=path,
                         minari_id="test/hopper/medium-v0")
    dataset = minari.load_dataset("test/hopper/medium-v0")
    assert dataset.total_steps == 250 and dataset.total_episodes == store.num_episodes
    assert dataset.storage.metadata["ref_min_score"] == pytest.approx(D4RL_REFERENCE_SCORES["hopper"][0])
    first = next(iter(dataset.iterate_episodes()))
    np.testing.assert_allclose(first.actions, store.load().actions[: len(first.actions)], rtol=1e-6)
