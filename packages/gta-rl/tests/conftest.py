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
