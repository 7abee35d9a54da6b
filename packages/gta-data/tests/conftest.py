import numpy as np
import pytest

from gta_data import Transitions


def make_transitions(n: int = 100, obs_dim: int = 3, act_dim: int = 2, seed: int = 0, ends=None) -> Transitions:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    if ends is not None:
        timeouts[np.asarray(ends) - 1] = True
    return Transitions(
        observations=obs,
        actions=rng.uniform(-1, 1, size=(n, act_dim)),
        rewards=rng.normal(size=n),
        next_observations=obs + 0.1,
        terminals=terminals,
        timeouts=timeouts,
    )


@pytest.fixture(name="make_transitions")
def _make_transitions_fixture():
    return make_transitions


@pytest.fixture
def transitions() -> Transitions:
    return make_transitions(100, ends=[30, 70, 100])


@pytest.fixture(autouse=True)
def _minari_home(tmp_path, monkeypatch):
    # Minari datasets made by tests live in the test's own folder.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
