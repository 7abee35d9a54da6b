"""Shared fixtures: one CPU thread (the CI machine has two cores shared by every package's tests) and a
small PointGoal behaviour store."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def point_store(tmp_path_factory):
    from gta_rl.toy import write_point_dataset

    path = tmp_path_factory.mktemp("data") / "point.zarr"
    write_point_dataset(path, episodes=200, expert_prob=0.25, seed=0)
    return path


@pytest.fixture
def halfcheetah_sized_data(tmp_path):
    """4,000 random transitions of HalfCheetah's sizes (obs 17, act 6), loaded on the GPU (GPU tests)."""
    import numpy as np

    from gta_data import Transitions, write_store
    from gta_rl.buffer import load_training_data

    rng = np.random.default_rng(0)
    n = 4000
    obs = rng.normal(size=(n, 17)).astype(np.float32)
    write_store(tmp_path / "hc.zarr", Transitions(obs, rng.uniform(-1, 1, (n, 6)), rng.normal(size=n),
                                                  obs + 0.1 * rng.normal(size=(n, 17)), np.zeros(n, bool),
                                                  np.zeros(n, bool)), np.arange(1000, n + 1, 1000),
                env_id="HalfCheetah-v5")
    return load_training_data([tmp_path / "hc.zarr"], device="cuda")[0]
