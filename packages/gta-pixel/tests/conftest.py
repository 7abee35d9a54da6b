import numpy as np
import pytest

from gta_pixel.tasks import FakeTask


def fake_dataset(lengths=(5, 1, 7), act_dim=2, size=8, state_dim=3, seed=0, terminal_last=False):
    """Episodes of the given lengths as the arrays of write_pixel_store (F = N + E frames)."""
    rng = np.random.default_rng(seed)
    n, e = int(sum(lengths)), len(lengths)
    ends = np.cumsum(lengths).astype(np.int64)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    if terminal_last:
        terminals[ends[-1] - 1] = True
        timeouts[ends[:-1] - 1] = True
    else:
        timeouts[ends - 1] = True
    return dict(
        frames=rng.integers(0, 256, size=(n + e, 3, size, size), dtype=np.uint8),
        actions=rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        discounts=(~terminals).astype(np.float32),
        terminals=terminals,
        timeouts=timeouts,
        episode_ends=ends,
        states=rng.normal(size=(n + e, state_dim)).astype(np.float32),
    )


@pytest.fixture(name="fake_dataset")
def _fake_dataset_fixture():
    return fake_dataset


@pytest.fixture
def fake_task():
    return FakeTask(size=8, act_dim=2, state_dim=3, max_steps=6)
