import numpy as np
import pytest

from gta_data import RecipeError, Transitions
from gta_data.policies import random_actor, save_policy_file
from gta_data.recipes import list_recipes, make_dataset
from gta_data.replay import ReplayError, ReplayFile, load_replay_file, save_replay_file
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
        for kind in ("random", "random-uniform", "medium", "medium-replay", "expert", "medium-expert"):
            assert f"{env}-{kind}" in names


def test_random_is_deterministic(tmp_path):
    for name in ("hopper-random", "hopper-random-uniform"):
        a = make_dataset(name, tmp_path / "a.zarr", size=400, seed=5, overwrite=True).load()
        b = make_dataset(name, tmp_path / "b.zarr", size=400, seed=5, overwrite=True).load()
        c = make_dataset(name, tmp_path / "c.zarr", size=400, seed=6, overwrite=True).load()
        for key, value in a.arrays().items():
            np.testing.assert_array_equal(value, b.arrays()[key])
        assert not np.array_equal(a.actions, c.actions)


def _tanh_normal_second_moment() -> float:
    """E[tanh(z)^2] for z ~ N(0, 1), by the trapezoidal rule in float64."""
    z = np.linspace(-12.0, 12.0, 200_001)
    f = np.tanh(z) ** 2 * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return float(np.sum((f[1:] + f[:-1]) * np.diff(z)) / 2)


def test_random_is_the_initialised_sac_actor_not_uniform(tmp_path):
    """D4RL v2's random policy (a SAC actor at initialisation) and the uniform one differ: the initial actor
    samples about tanh(N(0, 1)) in every dimension (std 0.628), uniform actions have std 1/sqrt(3) = 0.577."""
    init = make_dataset("hopper-random", tmp_path / "i.zarr", size=3000, seed=0)
    uniform = make_dataset("hopper-random-uniform", tmp_path / "u.zarr", size=3000, seed=0)
    ai, au = init.load().actions, uniform.load().actions
    assert ai.shape == au.shape == (3000, 3) and not np.array_equal(ai, au)
    assert (np.abs(ai) <= 1).all()
    expected = np.sqrt(_tanh_normal_second_moment())
    assert abs(expected - 0.6278) < 1e-3
    # 3000 samples per dimension: the standard error of each std is about 0.01.
    np.testing.assert_allclose(ai.std(0), expected, atol=0.03)
    np.testing.assert_allclose(au.std(0), 1 / np.sqrt(3), atol=0.03)
    assert ai.std() - au.std() > 0.035  # pooled over 9000 draws: several standard errors apart
    assert np.abs(ai.mean(0)).max() < 0.06
    prov = init.provenance
    assert prov["policy_init"] == {"hidden": [256, 256], "weights_rng": [0, 2], "noise_rng": [0, 3]}
    assert "initialised" in prov["policy"] and prov["d4rl_name"] == "hopper-random"
    assert uniform.provenance["policy"] == "uniform random" and uniform.provenance["d4rl_name"] == "hopper-random"
    assert init.ref_scores == uniform.ref_scores == pytest.approx(D4RL_REFERENCE_SCORES["hopper"])


def test_initial_actor_forward_and_initialisation():
    from gta_data.recipes.initial_policy import LOG_STD_MAX, LOG_STD_MIN, initial_actor

    actor = initial_actor(11, 3, np.random.default_rng(0), -np.ones(3), np.ones(3))
    (w0, b0), (w1, b1) = actor.hidden
    assert w0.shape == (11, 256) and w1.shape == (256, 256) and (b0 == np.float32(0.1)).all()
    assert np.abs(w0).max() <= 1 / 16 and np.abs(w0).max() > 0.06  # U(+-1/sqrt(256)): rlkit's fanin_init
    for w, b in (actor.mean_head, actor.log_std_head):
        assert w.shape == (256, 3) and np.abs(w).max() <= 1e-3 and np.abs(b).max() <= 1e-3
    obs = np.random.default_rng(1).normal(size=(64, 11)).astype(np.float32)
    # float64 reference of the forward pass.
    x = obs.astype(np.float64)
    for w, b in actor.hidden:
        x = np.maximum(x @ w.astype(np.float64) + b, 0.0)
    ref_mean = x @ actor.mean_head[0].astype(np.float64) + actor.mean_head[1]
    ref_log_std = np.clip(x @ actor.log_std_head[0].astype(np.float64) + actor.log_std_head[1], LOG_STD_MIN,
                          LOG_STD_MAX)
    mean, log_std = actor.distribution(obs)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-5)
    np.testing.assert_allclose(log_std, ref_log_std, atol=1e-5)
    assert np.abs(mean).max() < 0.1 and np.abs(log_std).max() < 0.1  # the initial Gaussian: about N(0, 1)
    noise = np.random.default_rng(2).standard_normal((64, 3)).astype(np.float32)
    np.testing.assert_allclose(actor.sample(obs, np.random.default_rng(2)), np.tanh(ref_mean + np.exp(ref_log_std) * noise),
                               atol=1e-5)
    # Rescaled to the action box.
    boxed = initial_actor(11, 3, np.random.default_rng(0), np.array([0.0, -2, -1]), np.array([1.0, 2, 1]))
    a = boxed.sample(obs, np.random.default_rng(2))
    np.testing.assert_allclose(a, np.tanh(ref_mean + np.exp(ref_log_std) * noise) * [0.5, 2, 1] + [0.5, 0, 0],
                               atol=1e-5)


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


def _recorded_run(env_id: str, lengths: list[int], seed: int = 0):
    """Episodes of random actions recorded as a SAC run would keep them (initial state, float32 actions),
    and the transitions they produced."""
    import gymnasium as gym

    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    starts, actions, episodes = [], [], []
    for e, length in enumerate(lengths):
        obs, _ = env.reset(seed=100 + e)
        starts.append(env.unwrapped.state_vector().copy())
        rows = {k: [] for k in ("o", "a", "r", "no", "term")}
        for _ in range(length):
            a = rng.uniform(-0.3, 0.3, env.action_space.shape).astype(np.float32)
            no, r, term, _, _ = env.step(a)
            for key, value in zip(rows, (obs, a, r, no, term), strict=False):
                rows[key].append(value)
            obs = no
            if term:
                break
        actions.append(np.stack(rows["a"]))
        episodes.append({k: np.asarray(v) for k, v in rows.items()})
    replay = ReplayFile(
        env_id=env_id, starts=np.stack(starts), lengths=np.asarray([len(e["r"]) for e in episodes]),
        terminal=np.asarray([bool(e["term"][-1]) for e in episodes]), actions=np.concatenate(actions),
        returns=np.asarray([e["r"].astype(np.float32).astype(np.float64).sum() for e in episodes]),
        last_obs=np.stack([e["no"][-1] for e in episodes]).astype(np.float32), provenance={"source": "test run"})
    return replay, episodes


def test_medium_replay_resimulates_the_recorded_run(tmp_path):
    # Hopper falls under these random actions: episodes end by termination as well as by length.
    replay, episodes = _recorded_run("Hopper-v5", [40, 300, 25])
    assert replay.terminal.any() and not replay.terminal.all()
    path = save_replay_file(tmp_path / "hopper-medium-replay.npz", replay)
    loaded = load_replay_file(path)
    np.testing.assert_array_equal(loaded.actions, replay.actions)
    full = make_dataset("hopper-medium-replay", tmp_path / "full.zarr", replay_file=path)
    data = full.load()
    np.testing.assert_array_equal(data.observations, np.concatenate([e["o"] for e in episodes]).astype(np.float32))
    np.testing.assert_array_equal(data.rewards, np.concatenate([e["r"] for e in episodes]).astype(np.float32))
    np.testing.assert_array_equal(data.terminals, np.concatenate([e["term"] for e in episodes]))
    assert list(full.episode_lengths) == list(replay.lengths)
    assert full.ref_scores == pytest.approx(D4RL_REFERENCE_SCORES["hopper"])
    check = full.provenance["replay_check"]
    assert check == {"episodes": 3, "transitions": replay.num_transitions, "max_return_error": 0.0,
                     "max_last_obs_error": 0.0, "ending_mismatches": 0}
    assert full.provenance["replay_provenance"]["source"] == "test run"
    cut = make_dataset("hopper-medium-replay", tmp_path / "cut.zarr", size=50, replay_file=path)
    assert cut.num_transitions == 50 and cut.load().timeouts[-1]
    # A recording the simulator does not reproduce is measured, not hidden.
    replay.actions[:5] += 0.5
    save_replay_file(tmp_path / "bent.npz", replay)
    bent = make_dataset("hopper-medium-replay", tmp_path / "bent.zarr", replay_file=tmp_path / "bent.npz")
    assert bent.provenance["replay_check"]["max_last_obs_error"] > 0
    with pytest.raises(RecipeError, match="not HalfCheetah-v5"):
        make_dataset("halfcheetah-medium-replay", tmp_path / "x.zarr", replay_file=path)


def test_replay_file_errors(tmp_path):
    replay, _ = _recorded_run("Hopper-v5", [5])
    with pytest.raises(ReplayError, match="actions for"):
        save_replay_file(tmp_path / "bad.npz", ReplayFile(**{**replay.__dict__, "actions": replay.actions[:-1]}))
    assert not list(tmp_path.iterdir())
    np.savez(tmp_path / "meta.npz", __meta__=np.asarray("{not json"), actions=replay.actions)
    with pytest.raises(ReplayError, match="unreadable metadata"):
        load_replay_file(tmp_path / "meta.npz")
    (tmp_path / "meta.npz").unlink()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(RecipeError, match="cannot read replay file"):
        make_dataset("hopper-medium-replay", tmp_path / "out.zarr", replay_file=tmp_path / "junk.npz")
    with pytest.raises(RecipeError, match="is missing"):
        make_dataset("hopper-medium-replay", tmp_path / "out.zarr", replay_file=tmp_path / "none.npz")
    assert not (tmp_path / "out.zarr").exists()
    walker, _ = _recorded_run("Walker2d-v5", [5])
    save_replay_file(tmp_path / "w.npz", ReplayFile(**{**walker.__dict__, "env_id": "Hopper-v5"}))
    with pytest.raises(RecipeError, match="replay states have 18 numbers, Hopper-v5 needs 12"):
        make_dataset("hopper-medium-replay", tmp_path / "out.zarr", replay_file=tmp_path / "w.npz")


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


@pytest.mark.parametrize("family", ["halfcheetah", "hopper", "walker2d"])
def test_shipped_behaviour_files_make_datasets(tmp_path, family, monkeypatch):
    """The policy and replay files in the repository (trained on an H100, see docs/datasets.md) make every
    dataset of the family on this CPU, and the medium-replay re-simulation reproduces the recorded run."""
    from gta_data.policies import load_policy_file, policy_dir

    monkeypatch.delenv("GTA_POLICY_DIR", raising=False)
    env_id = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}[family]
    policies = load_policy_file(policy_dir() / f"{family}.npz")
    assert policies.env_id == env_id and set(policies.actors) == {"medium", "expert"}
    medium, expert = policies.actors["medium"].info, policies.actors["expert"].info
    assert medium["step"] <= expert["step"] and medium["eval_return"] <= expert["eval_return"]
    for kind in ("medium", "expert", "medium-expert"):
        store = make_dataset(f"{family}-{kind}", tmp_path / f"{kind}.zarr", size=600, seed=3)
        assert store.num_transitions == 600 and store.env_id == env_id
    replay = make_dataset(f"{family}-medium-replay", tmp_path / "mr.zarr", size=3000)
    check = replay.provenance["replay_check"]
    assert check["episodes"] >= 2 and check["ending_mismatches"] == 0
    assert check["max_return_error"] == 0.0 and check["max_last_obs_error"] == 0.0
    assert replay.provenance["replay_provenance"]["upto_step"] == medium["step"]
