"""Minari -> store -> Minari, on Minari datasets created locally (no network)."""

from pathlib import Path

import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from gta_data import StoreError, TrajectoryStore
from gta_data.minari_bridge import export_minari, import_minari, register_robotics_envs


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
