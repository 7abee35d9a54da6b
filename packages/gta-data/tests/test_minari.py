"""Minari -> store -> Minari, on Minari datasets created locally (no network)."""

from pathlib import Path

import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from gta_data import StoreError, TrajectoryStore
from gta_data.minari_bridge import export_minari, import_minari
from gta_data.simulators import register_robotics_envs


def _box_buffers(rng, lengths, obs_dim=17, act_dim=6, terminate_last=True):
    buffers = []
    for i, n in enumerate(lengths):
        terminations = np.zeros(n, bool)
        truncations = np.zeros(n, bool)
        if terminate_last and i == len(lengths) - 1:
            terminations[-1] = True
        else:
            truncations[-1] = True
        buffers.append(EpisodeBuffer(
            id=i,
            observations=rng.normal(size=(n + 1, obs_dim)).astype(np.float32),
            actions=rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
            rewards=rng.normal(size=n),
            terminations=terminations,
            truncations=truncations,
        ))
    return buffers


def test_minari_store_minari_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    buffers = _box_buffers(rng, [20, 35, 12])
    minari.create_dataset_from_buffers("test/halfcheetah/local-v0", buffer=buffers, env="HalfCheetah-v5",
                                       ref_min_score=-280.0, ref_max_score=12135.0, author="t",
                                       description="t", code_permalink="t", author_email="t")
    store = import_minari("test/halfcheetah/local-v0", tmp_path / "hc.zarr")
    assert store.env_id == "HalfCheetah-v5" and store.ref_scores == (-280.0, 12135.0)
    assert list(store.episode_ends) == [20, 55, 67]
    data = store.load()
    for i, (a, b) in enumerate([(0, 20), (20, 55), (55, 67)]):
        np.testing.assert_array_equal(data.observations[a:b], buffers[i].observations[:-1])
        np.testing.assert_array_equal(data.next_observations[a:b], buffers[i].observations[1:])
        np.testing.assert_array_equal(data.actions[a:b], buffers[i].actions)
        np.testing.assert_allclose(data.rewards[a:b], buffers[i].rewards, rtol=1e-6)
    assert data.terminals.sum() == 1 and data.terminals[-1]
    assert data.timeouts[19] and data.timeouts[54]

    export_minari(tmp_path / "hc.zarr", "test/halfcheetah/back-v0")
    back = minari.load_dataset("test/halfcheetah/back-v0")
    assert back.total_episodes == 3 and back.total_steps == 67
    assert back.storage.metadata["ref_min_score"] == -280.0
    for ep, buf in zip(back.iterate_episodes(), buffers, strict=False):
        np.testing.assert_array_equal(ep.observations, buf.observations)
        np.testing.assert_array_equal(ep.actions, buf.actions)
        np.testing.assert_array_equal(ep.terminations, buf.terminations)
        np.testing.assert_array_equal(ep.truncations, buf.truncations)
    # Importing the export again gives the same arrays.
    again = import_minari("test/halfcheetah/back-v0", tmp_path / "again.zarr").load()
    np.testing.assert_array_equal(again.observations, data.observations)


def test_dict_observations_are_flattened_with_layout(tmp_path):
    register_robotics_envs()
    rng = np.random.default_rng(1)
    n = 15
    obs = {
        "observation": rng.normal(size=(n + 1, 4)),
        "achieved_goal": rng.normal(size=(n + 1, 2)),
        "desired_goal": rng.normal(size=(n + 1, 2)),
    }
    buf = EpisodeBuffer(id=0, observations=obs, actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                        rewards=np.zeros(n), terminations=np.zeros(n, bool),
                        truncations=np.r_[np.zeros(n - 1, bool), True])
    minari.create_dataset_from_buffers("test/pointmaze/dict-v0", buffer=[buf], env="PointMaze_UMaze-v3",
                                       author="t", description="t", code_permalink="t", author_email="t")
    store = import_minari("test/pointmaze/dict-v0", tmp_path / "pm.zarr")
    assert store.obs_dim == 6
    assert store.attrs["observation_layout"] == [
        {"key": "observation", "start": 0, "stop": 4},
        {"key": "desired_goal", "start": 4, "stop": 6},
    ]
    data = store.load()
    np.testing.assert_allclose(data.observations[:, :4], obs["observation"][:-1], rtol=1e-6)
    np.testing.assert_allclose(data.next_observations[:, 4:], obs["desired_goal"][1:], rtol=1e-6)
    keys = import_minari("test/pointmaze/dict-v0", tmp_path / "pm2.zarr",
                         obs_keys=["observation", "achieved_goal", "desired_goal"])
    assert keys.obs_dim == 8


def test_missing_dataset_and_existing_target(tmp_path):
    with pytest.raises(StoreError, match="not found locally"):
        import_minari("nobody/none/nothing-v0", tmp_path / "x.zarr")
    assert not (tmp_path / "x.zarr").exists()
    rng = np.random.default_rng(0)
    minari.create_dataset_from_buffers("test/halfcheetah/twice-v0", buffer=_box_buffers(rng, [5]),
                                       env="HalfCheetah-v5", author="t", description="t",
                                       code_permalink="t", author_email="t")
    import_minari("test/halfcheetah/twice-v0", tmp_path / "x.zarr")
    with pytest.raises(StoreError, match="already exists"):
        import_minari("test/halfcheetah/twice-v0", tmp_path / "x.zarr")
    export_minari(tmp_path / "x.zarr", "test/halfcheetah/out-v0")
    with pytest.raises(StoreError, match="already exists"):
        export_minari(tmp_path / "x.zarr", "test/halfcheetah/out-v0")
    TrajectoryStore.open(tmp_path / "x.zarr")


def test_overwrite_keeps_the_old_dataset_until_the_new_one_is_written(tmp_path):
    import shutil

    from minari.storage import get_dataset_path

    from gta_data.errors import RecipeError
    from gta_data.recipes import make_dataset

    rng = np.random.default_rng(1)
    minari.create_dataset_from_buffers("test/halfcheetah/keep-v0", buffer=_box_buffers(rng, [7]),
                                       env="HalfCheetah-v5", author="t", description="t",
                                       code_permalink="t", author_email="t")
    import_minari("test/halfcheetah/keep-v0", tmp_path / "src.zarr")
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(tmp_path / "src.zarr", damaged)
    chunk = next(p for p in (damaged / "data" / "actions").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"junk")
    with pytest.raises(StoreError, match="cannot read data/actions"):
        export_minari(damaged, "test/halfcheetah/keep-v0", overwrite=True)
    assert minari.load_dataset("test/halfcheetah/keep-v0").total_steps == 7  # the old one is intact
    assert not any(p.name.startswith(".") for p in Path(get_dataset_path("test/halfcheetah/keep-v0")).parent.iterdir())
    # make --minari-id checks the id before any work: no store is left behind by a taken or bad id.
    for bad in ("test/halfcheetah/keep-v0", "not an id"):
        with pytest.raises((StoreError, RecipeError)):
            make_dataset("pointmaze-umaze", tmp_path / "pm.zarr", size=200, minari_id=bad)
        assert not (tmp_path / "pm.zarr").exists()


def _goal_switch_store(path, *, lengths=(40, 25), switches=(17, 30)):
    """A PointMaze-like store (observation + desired_goal) whose goal moves between two steps of an episode:
    next_observations[t] keeps the old goal, observations[t + 1] shows the new one (as the recipe records)."""
    from gta_data import Transitions, write_store

    rng = np.random.default_rng(3)
    n = sum(lengths)
    states = rng.normal(size=(n + len(lengths), 4)).astype(np.float32)
    goals = np.repeat(rng.normal(size=(len(switches) + 1, 2)), np.diff([0, *switches, n]), axis=0).astype(np.float32)
    obs, next_obs, start = [], [], 0
    for k, length in enumerate(lengths):
        s = states[start + k:start + k + length + 1]
        g = goals[start:start + length]
        obs.append(np.concatenate([s[:-1], g], axis=1))
        next_obs.append(np.concatenate([s[1:], g], axis=1))  # the goal of the step, not of the next row
        start += length
    ends = np.cumsum(lengths)
    timeouts = np.zeros(n, bool)
    timeouts[ends - 1] = True
    data = Transitions(observations=np.concatenate(obs), actions=rng.uniform(-1, 1, (n, 2)),
                       rewards=rng.normal(size=n), next_observations=np.concatenate(next_obs),
                       terminals=np.zeros(n, bool), timeouts=timeouts)
    layout = [{"key": "observation", "start": 0, "stop": 4}, {"key": "desired_goal", "start": 4, "stop": 6}]
    env_kwargs = {"continuing_task": True, "reset_target": False, "max_episode_steps": 40}
    return write_store(path, data, ends, env_id="PointMaze_UMaze-v3", observation_layout=layout,
                       ref_min_score=23.85, ref_max_score=161.86, attrs={"env_kwargs": env_kwargs})


def _minari_rows(dataset_id):
    """(observations, next observations) rebuilt from a Minari dataset's flat or Dict T+1 observations."""
    obs, nxt, truncs = [], [], []
    for ep in minari.load_dataset(dataset_id).iterate_episodes():
        o = ep.observations
        if isinstance(o, dict):
            o = np.concatenate([o["observation"], o["desired_goal"]], axis=1)
        obs.append(o[:-1])
        nxt.append(o[1:])
        truncs.append(ep.truncations)
    return np.concatenate(obs), np.concatenate(nxt), truncs


def _assert_same_store(a: TrajectoryStore, b: TrajectoryStore):
    np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
    da, db = a.load(), b.load()
    for name, arr in da.arrays().items():
        np.testing.assert_array_equal(db.arrays()[name], arr, err_msg=name)
    for key in ("env_id", "obs_dim", "act_dim", "ref_min_score", "ref_max_score", "observation_layout", "env_kwargs"):
        assert b.attrs.get(key) == a.attrs.get(key), key


def test_export_splits_episodes_where_the_goal_switches_and_never_changes_a_value(tmp_path, caplog):
    store = _goal_switch_store(tmp_path / "pm.zarr")
    with caplog.at_level("WARNING"):
        export_minari(store.path, "test/pointmaze/switch-v0")
    assert "2 store episodes became 4 Minari episodes" in caplog.text
    data = store.load()
    obs, nxt, truncs = _minari_rows("test/pointmaze/switch-v0")
    np.testing.assert_array_equal(obs, data.observations)
    np.testing.assert_array_equal(nxt, data.next_observations)  # was observations[t + 1] at the switches
    assert [len(t) for t in truncs] == [17, 13, 10, 25] and all(t[-1] for t in truncs)
    _assert_same_store(store, import_minari("test/pointmaze/switch-v0", tmp_path / "back.zarr"))


def test_export_of_a_transition_level_store_keeps_every_transition(tmp_path):
    from gta_data import Transitions, write_store

    rng = np.random.default_rng(4)
    n = 30
    data = Transitions(observations=rng.normal(size=(n, 17)), actions=rng.uniform(-1, 1, (n, 6)),
                       rewards=rng.normal(size=n), next_observations=rng.normal(size=(n, 17)),
                       terminals=np.r_[np.zeros(n - 1, bool), True], timeouts=np.r_[np.zeros(19, bool), True,
                                                                                    np.zeros(10, bool)])
    data.timeouts[5] = True  # a timeout inside a segment survives the round trip
    store = write_store(tmp_path / "synther.zarr", data, np.array([20, 30]), env_id="HalfCheetah-v5",
                        provenance={"transition_level": True})
    export_minari(store.path, "test/halfcheetah/synther-v0")
    back = minari.load_dataset("test/halfcheetah/synther-v0")
    assert back.total_episodes == n and back.total_steps == n
    obs, nxt, _ = _minari_rows("test/halfcheetah/synther-v0")
    np.testing.assert_array_equal(obs, data.observations)
    np.testing.assert_array_equal(nxt, data.next_observations)
    again = import_minari("test/halfcheetah/synther-v0", tmp_path / "back.zarr")
    _assert_same_store(store, again)
    assert again.provenance["exported_store"]["transition_level"] is True


def test_pointmaze_exports_the_env_dict_space_and_round_trips(tmp_path):
    from gta_data.recipes import make_dataset

    store = make_dataset("pointmaze-umaze", tmp_path / "pm.zarr", size=700, seed=2)
    export_minari(store.path, "test/pointmaze/dict-out-v0")
    dataset = minari.load_dataset("test/pointmaze/dict-out-v0")
    env = dataset.recover_environment(eval_env=True)
    assert env.spec.max_episode_steps == 300
    assert env.spec.kwargs["continuing_task"] is True and env.spec.kwargs["reset_target"] is False
    assert dataset.observation_space == env.observation_space
    for ep in dataset.iterate_episodes():
        for t in range(len(ep.actions) + 1):
            assert env.observation_space.contains({k: v[t] for k, v in ep.observations.items()})
        np.testing.assert_array_equal(ep.observations["achieved_goal"], ep.observations["observation"][:, :2])
    _assert_same_store(store, import_minari("test/pointmaze/dict-out-v0", tmp_path / "back.zarr"))


def test_pointmaze_achieved_goal_is_the_position(tmp_path):
    # Export derives PointMaze's achieved_goal from observation[0:2]; the real env must agree.
    from gta_data.simulators import make_env

    env = make_env("PointMaze_UMaze-v3")
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        np.testing.assert_array_equal(obs["achieved_goal"], obs["observation"][:2])
        obs, *_ = env.step(env.action_space.sample())


def test_a_dict_store_without_the_keys_of_the_env_space_is_refused(tmp_path):
    from gta_data import write_store

    store = _goal_switch_store(tmp_path / "pm.zarr")
    data = store.load()
    bad = write_store(tmp_path / "bad.zarr", data, store.episode_ends, env_id="PointMaze_UMaze-v3",
                      observation_layout=[{"key": "observation", "start": 0, "stop": 6}])
    with pytest.raises(StoreError, match="lacks 'desired_goal'"):
        export_minari(bad.path, "test/pointmaze/bad-v0")
    flat = write_store(tmp_path / "flat.zarr", data, store.episode_ends, env_id="PointMaze_UMaze-v3")
    with pytest.raises(StoreError, match="no observation_layout"):
        export_minari(flat.path, "test/pointmaze/bad-v0")


def test_import_takes_env_kwargs_from_the_eval_env_spec(tmp_path):
    import dataclasses

    import gymnasium as gym

    register_robotics_envs()
    rng = np.random.default_rng(5)
    n = 12
    obs = {k: rng.normal(size=(n + 1, d)) for k, d in (("observation", 4), ("achieved_goal", 2), ("desired_goal", 2))}
    buf = EpisodeBuffer(id=0, observations=obs, actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                        rewards=np.zeros(n), terminations=np.zeros(n, bool), truncations=np.r_[np.zeros(n - 1, bool), True])
    base = gym.spec("PointMaze_UMaze-v3")
    collect = dataclasses.replace(base, kwargs={**base.kwargs, "continuing_task": True, "reset_target": True},
                                  max_episode_steps=1_000_000)
    evaluate = dataclasses.replace(collect, max_episode_steps=60)
    minari.create_dataset_from_buffers("test/pointmaze/evalspec-v0", buffer=[buf], env=collect, eval_env=evaluate,
                                       author="t", description="t", code_permalink="t", author_email="t")
    store = import_minari("test/pointmaze/evalspec-v0", tmp_path / "pm.zarr")
    assert store.attrs["env_kwargs"] == {"continuing_task": True, "reset_target": True, "max_episode_steps": 60}
    assert "eval_env_spec" in store.attrs and "env_spec" in store.attrs
    assert set(store.provenance["simulators"]) == {"gymnasium", "mujoco", "gymnasium-robotics"}


def test_d3rlpy_loads_an_exported_pointmaze_dataset(tmp_path):
    d3rlpy = pytest.importorskip("d3rlpy")
    from gta_data.recipes import make_dataset

    make_dataset("pointmaze-umaze", tmp_path / "pm.zarr", size=700, seed=2, minari_id="test/pointmaze/d3rlpy-v0")
    dataset, env = d3rlpy.datasets.get_minari("test/pointmaze/d3rlpy-v0")
    assert dataset.transition_count > 0 and env.spec.max_episode_steps == 300


@pytest.mark.parametrize(("error", "match"), [
    (ImportError('huggingface_hub is not installed. Please install it using `pip install "minari[hf]"`',
                 name="huggingface_hub"), "needs huggingface_hub"),
    (ConnectionError("Failed to resolve 'huggingface.co'\nretrying..."), "cannot download .*ConnectionError"),
])
def test_download_failures_are_one_line(tmp_path, monkeypatch, error, match):
    from typer.testing import CliRunner

    from gta_data.cli import app

    def load_dataset(dataset_id, download=False):
        if not download:
            raise FileNotFoundError(dataset_id)
        raise error

    monkeypatch.setattr(minari, "load_dataset", load_dataset)
    with pytest.raises(StoreError, match=match):
        import_minari("D4RL/pointmaze/umaze-v2", tmp_path / "x.zarr", download=True)
    result = CliRunner().invoke(app, ["import", "D4RL/pointmaze/umaze-v2", "--out", str(tmp_path / "x.zarr"),
                                      "--download"])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0, result.output
    assert not (tmp_path / "x.zarr").exists()
