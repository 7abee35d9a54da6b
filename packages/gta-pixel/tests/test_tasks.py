import json

import numpy as np
import pytest

from gta_pixel.errors import TaskError
from gta_pixel.tasks import FakeTask, PixelTask, make_task, parse_task


def rollout(task, seed, steps, actions_seed=1):
    rng = np.random.default_rng(actions_seed)
    state, frame = task.reset(seed)
    out = [(state, frame, 0.0, False, False)]
    for _ in range(steps):
        out.append(task.step(rng.uniform(-1, 1, task.act_dim)))
        if out[-1][3] or out[-1][4]:
            break
    return out


def test_fake_task_interface_and_determinism(fake_task):
    assert isinstance(fake_task, PixelTask)
    state, frame = fake_task.reset(3)
    assert state.dtype == np.float32 and state.shape == (3,)
    assert frame.dtype == np.uint8 and frame.shape == fake_task.frame_shape == (3, 8, 8)
    a = rollout(fake_task, 3, 10)
    b = rollout(make_task(json.loads(json.dumps(fake_task.spec))), 3, 10)
    assert len(a) == len(b) == fake_task.max_steps + 1  # truncated by the time limit
    assert a[-1][4] and not any(s[4] for s in a[:-1])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])
        assert x[2:] == y[2:]
    c = rollout(fake_task, 4, 3)
    assert not np.array_equal(a[0][1], c[0][1])  # another seed, another first frame
    assert not np.array_equal(a[1][1], a[2][1])  # the frame moves with the state


def test_fake_task_frame_is_the_documented_function(fake_task):
    state, frame = fake_task.reset(0)
    expected = np.clip(np.rint(127.5 + 127.0 * np.tanh(fake_task._u @ state.astype(np.float64))), 0, 255)
    np.testing.assert_allclose(frame, expected, atol=1)  # state is the float32 copy of the float64 state
    s0 = fake_task._s.copy()
    action = np.array([0.5, -0.25], np.float32)
    _, _, reward, _, _ = fake_task.step(action)
    s1 = fake_task._a @ s0 + fake_task._b @ action.astype(np.float64)
    np.testing.assert_allclose(fake_task._s, s1)
    assert reward == pytest.approx(np.exp(-s1 @ s1))


def test_fake_task_terminates():
    task = FakeTask(size=4, act_dim=1, state_dim=2, max_steps=50, terminate_above=1.2)
    task.reset(0)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        state, _, _, terminated, truncated = task.step(np.ones(1))
        steps += 1
    assert terminated and not truncated and steps < 50
    assert np.abs(state).max() > 1.2


def test_make_task_errors():
    with pytest.raises(TaskError, match="unknown task kind"):
        make_task({"kind": "atari"})
    with pytest.raises(TaskError, match="'kind'"):
        make_task({"size": 3})
    with pytest.raises(TaskError, match="bad fake task spec"):
        make_task({"kind": "fake", "colour": 1})
    with pytest.raises(TaskError, match="action must have 2"):
        FakeTask(act_dim=2).step(np.zeros(3))


def test_parse_task():
    assert parse_task("walker_walk") == {"kind": "dmc", "domain": "walker", "task": "walk", "size": 84,
                                         "camera": 0, "action_repeat": 2}
    assert parse_task("quadruped_run")["camera"] == 2
    assert parse_task("cup_catch")["domain"] == "ball_in_cup"
    assert parse_task("gym:Walker2d-v5", size=64)["env_id"] == "Walker2d-v5"
    assert parse_task("fake")["kind"] == "fake"
    with pytest.raises(TaskError, match="domain_task"):
        parse_task("walker")
