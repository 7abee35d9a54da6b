"""medium-replay: a replay file's episodes re-simulated in the fake task and written as a pixel store."""

import numpy as np
import pytest

from gta_data.replay import ReplayFile, save_replay_file
from gta_pixel.behaviour import default_replay_file
from gta_pixel.errors import GenerateError
from gta_pixel.generate import make_dataset
from gta_pixel.resimulate import ResimCheck
from gta_pixel.tasks import FakeTask

SPEC = FakeTask(size=8, act_dim=2, state_dim=3, max_steps=6).spec


@pytest.fixture
def replay_file(tmp_path, record):
    # Two full episodes (6 steps, truncated by the time limit) and one cut at 4 steps (the run's row K).
    replay, states, rewards = record(SPEC, [6, 6, 4])
    return save_replay_file(tmp_path / "fake-medium-replay.npz", replay), states, rewards


def test_resimulated_states_equal_the_recorded_ones(tmp_path, replay_file):
    path, states, rewards = replay_file
    store = make_dataset(SPEC, "medium-replay", tmp_path / "mr.zarr", episodes=None, replay_file=path)
    assert (store.num_episodes, store.num_steps, store.num_frames) == (3, 16, 19)
    np.testing.assert_array_equal(store.episode_lengths, [6, 6, 4])
    data = store.load()
    np.testing.assert_array_equal(data.episode_ends, [6, 12, 16])
    np.testing.assert_array_equal(data.states, np.concatenate(states))  # bit for bit, every frame's state
    np.testing.assert_array_equal(data.rewards, np.concatenate(rewards))
    np.testing.assert_array_equal(data.actions, replay_file_actions(path))
    assert data.timeouts[[5, 11, 15]].all() and data.timeouts.sum() == 3 and not data.terminals.any()
    # The frames are the task's renders of those states.
    task = FakeTask(size=8, act_dim=2, state_dim=3, max_steps=6)
    _, frame = task.reset_to_state(states[2][0].astype(np.float64))
    np.testing.assert_array_equal(data.frames[14], frame)
    prov = store.provenance
    assert prov["quality"] == "medium-replay" and prov["replay_provenance"] == {"source": "test"}
    assert prov["replay_check"] == {"episodes": 3, "transitions": 16, "max_return_error": 0.0,
                                    "max_last_obs_error": 0.0, "ending_mismatches": 0}
    assert len(prov["replay_sha256"]) == 64 and "seed" not in prov
    first = make_dataset(SPEC, "medium-replay", tmp_path / "two.zarr", episodes=2, replay_file=path)
    assert first.num_episodes == 2 and first.num_steps == 12


def replay_file_actions(path):
    from gta_data.replay import load_replay_file

    return load_replay_file(path).actions


def test_same_data_for_any_number_of_workers(tmp_path, replay_file):
    path = replay_file[0]
    one = make_dataset(SPEC, "medium-replay", tmp_path / "w1.zarr", episodes=None, replay_file=path).load()
    two = make_dataset(SPEC, "medium-replay", tmp_path / "w2.zarr", episodes=None, replay_file=path,
                       workers=2).load()
    for name in ("frames", "states", "actions", "rewards", "discounts", "terminals", "timeouts", "episode_ends"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)


def test_terminations_and_deviations_are_reported(tmp_path, record):
    spec = FakeTask(size=4, act_dim=1, state_dim=2, max_steps=40, terminate_above=0.8).spec
    replay, _, _ = record(spec, [40] * 6)
    assert replay.terminal.any()
    store = make_dataset(spec, "medium-replay", tmp_path / "t.zarr", episodes=None,
                         replay_file=save_replay_file(tmp_path / "t.npz", replay))
    data = store.load()
    ends = data.episode_ends - 1
    np.testing.assert_array_equal(data.terminals[ends], replay.terminal)
    assert store.provenance["replay_check"]["ending_mismatches"] == 0
    # A recorded run the simulator does not reproduce: the check says by how much.
    replay.returns[1] += 0.25
    replay.last_obs[2] += 0.5
    replay.terminal[0] = not replay.terminal[0]
    check = make_dataset(spec, "medium-replay", tmp_path / "d.zarr", episodes=None, overwrite=True,
                         replay_file=save_replay_file(tmp_path / "d.npz", replay)).provenance["replay_check"]
    assert check["max_return_error"] == pytest.approx(0.25)
    assert check["max_last_obs_error"] == pytest.approx(0.5)
    assert check["ending_mismatches"] == 1


def test_an_episode_longer_than_the_time_limit_ends_there():
    check = ResimCheck()
    check.add(np.ones(6, np.float32), np.zeros(3), 6, False, 6.0, np.zeros(3), 8, False)
    assert (check.episodes, check.transitions, check.ending_mismatches, check.max_return_error) == (1, 6, 1, 0.0)


def test_errors(tmp_path, replay_file, record):
    path = replay_file[0]
    out = tmp_path / "x.zarr"
    with pytest.raises(GenerateError, match="needs the replay file .*none.npz, which is missing"):
        make_dataset(SPEC, "medium-replay", out, episodes=None, replay_file=tmp_path / "none.npz")
    with pytest.raises(GenerateError, match="--episodes 4, but the replay file holds 3"):
        make_dataset(SPEC, "medium-replay", out, episodes=4, replay_file=path)
    with pytest.raises(GenerateError, match="needs a number of episodes"):
        make_dataset(SPEC, "medium", out, episodes=None)
    wrong_state = FakeTask(size=8, act_dim=2, state_dim=4, max_steps=6).spec
    with pytest.raises(GenerateError, match="start states have 3 numbers, fake has 4"):
        make_dataset(wrong_state, "medium-replay", out, episodes=None, replay_file=path)
    wrong_act = FakeTask(size=8, act_dim=1, state_dim=3, max_steps=6).spec
    with pytest.raises(GenerateError, match="actions have 2 dims, fake has 1"):
        make_dataset(wrong_act, "medium-replay", out, episodes=None, replay_file=path)
    replay, _, _ = record(SPEC, [3])
    replay.actions[0, 0] = 1.5
    with pytest.raises(GenerateError, match=r"actions leave \[-1, 1\]"):
        make_dataset(SPEC, "medium-replay", out, episodes=None, replay_file=save_replay_file(tmp_path / "b.npz", replay))
    other = ReplayFile("Hopper-v5", replay.starts, replay.lengths, replay.terminal, np.clip(replay.actions, -1, 1),
                       replay.returns, replay.last_obs)
    dmc = {"kind": "dmc", "domain": "walker", "task": "walk", "size": 84, "camera": 0, "action_repeat": 2}
    assert default_replay_file(dmc).name == "walker_walk-medium-replay.npz"
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(GenerateError, match="bad.npz"):
        make_dataset(SPEC, "medium-replay", out, episodes=None, replay_file=tmp_path / "bad.npz")
    assert not list(tmp_path.glob("x.zarr*")) and not list(tmp_path.glob(".x.zarr*"))
    pytest.importorskip("dm_control")
    with pytest.raises(GenerateError, match="holds data of Hopper-v5, not walker_walk"):
        make_dataset(dmc, "medium-replay", out, episodes=None,
                     replay_file=save_replay_file(tmp_path / "h.npz", other))
