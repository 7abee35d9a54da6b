import numpy as np
import pytest
import torch

from gta_data.replay import ReplayFile
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


def record_replay(spec, lengths, seed=0):
    """Episodes recorded as a SAC run records them: the state after each reset, the actions sent, every
    observation and reward (the replay file keeps only the start, actions, return and last observation)."""
    task = FakeTask(**{k: v for k, v in spec.items() if k != "kind"})
    rng = np.random.default_rng(seed)
    starts, actions, states, rewards, terminal = [], [], [], [], []
    for e, length in enumerate(lengths):
        s, _ = task.reset(100 + e)
        starts.append(task.simulator_state())
        ep_states, ep_rewards, term = [s], [], False
        for _ in range(length):
            a = rng.uniform(-1, 1, task.act_dim).astype(np.float32)
            s, _, r, term, trunc = task.step(a)
            actions.append(a)
            ep_states.append(s)
            ep_rewards.append(np.float32(r))
            if term or trunc:
                break
        states.append(np.stack(ep_states))
        rewards.append(np.asarray(ep_rewards, np.float32))
        terminal.append(term)
    replay = ReplayFile(
        env_id="fake", starts=np.stack(starts), lengths=np.asarray([len(r) for r in rewards], np.int64),
        terminal=np.asarray(terminal), actions=np.stack(actions),
        returns=np.asarray([r.astype(np.float64).sum() for r in rewards]),
        last_obs=np.stack([s[-1] for s in states]), provenance={"source": "test"})
    return replay, states, rewards


@pytest.fixture(name="record")
def _record_fixture():
    return record_replay


@pytest.fixture(scope="module")
def one_thread():
    """One torch CPU thread for a module's tests (its tiny updates gain nothing from more), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
