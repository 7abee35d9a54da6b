import numpy as np
import pytest

from gta_data.policies import random_actor, save_policy_file
from gta_pixel.errors import GenerateError
from gta_pixel.generate import default_policy_file, make_dataset, rollout
from gta_pixel.tasks import FakeTask, make_task

SPEC = FakeTask(size=8, act_dim=2, state_dim=3, max_steps=6).spec


@pytest.fixture
def policy_file(tmp_path):
    actors = {"medium": random_actor(3, 2, hidden=(8,), seed=1, step=10),
              "expert": random_actor(3, 2, hidden=(8,), seed=2, step=20)}
    return save_policy_file(tmp_path / "fake.npz", "fake", actors)


def load(store):
    return store.load()


def test_random_data_matches_a_replay(tmp_path):
    store = make_dataset(SPEC, "random", tmp_path / "r.zarr", episodes=3, seed=7)
    assert (store.num_episodes, store.num_steps, store.num_frames) == (3, 18, 21)
    assert store.task == SPEC and store.state_dim == 3 and store.renderer == {"fake": True}
    prov = store.provenance
    assert prov["quality"] == "random" and prov["seed"] == 7 and "mujoco" in prov["simulators"]
    data = store.load()
    # episode 1 again, by hand: env seed 7 + 1, noise stream [7, 1]
    task = make_task(SPEC)
    ep = rollout(task, lambda s, rng: rng.uniform(-1, 1, 2), 8, np.random.default_rng([7, 1]))
    np.testing.assert_array_equal(data.frames[7:14], ep.frames)
    np.testing.assert_array_equal(data.states[7:14], ep.states)
    np.testing.assert_array_equal(data.actions[6:12], ep.actions)
    np.testing.assert_array_equal(data.rewards[6:12], ep.rewards)
    assert data.timeouts[[5, 11, 17]].all() and not data.terminals.any()


def test_same_data_for_any_number_of_workers(tmp_path, policy_file):
    one = make_dataset(SPEC, "medium-expert", tmp_path / "w1.zarr", episodes=4, seed=3, policy_file=policy_file)
    two = make_dataset(SPEC, "medium-expert", tmp_path / "w2.zarr", episodes=4, seed=3, workers=2,
                       policy_file=policy_file)
    a, b = one.load(), two.load()
    for name in ("frames", "states", "actions", "rewards", "discounts", "terminals", "timeouts", "episode_ends"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert one.renderer == two.renderer
    prov = one.provenance
    assert prov["policy"] == "SAC medium then expert (stochastic)" and len(prov["policy_sha256"]) == 64
    assert prov["policy_info"]["expert"]["step"] == 20


def test_medium_expert_uses_both_policies(tmp_path, policy_file):
    me = load(make_dataset(SPEC, "medium-expert", tmp_path / "me.zarr", episodes=4, seed=0, policy_file=policy_file))
    med = load(make_dataset(SPEC, "medium", tmp_path / "m.zarr", episodes=4, seed=0, policy_file=policy_file))
    exp = load(make_dataset(SPEC, "expert", tmp_path / "e.zarr", episodes=4, seed=0, policy_file=policy_file))
    np.testing.assert_array_equal(me.actions[:12], med.actions[:12])  # episodes 0, 1: medium
    np.testing.assert_array_equal(me.actions[12:], exp.actions[12:])  # episodes 2, 3: expert
    assert not np.array_equal(med.actions, exp.actions)


def test_terminations_are_recorded(tmp_path):
    spec = FakeTask(size=4, act_dim=1, state_dim=2, max_steps=40, terminate_above=0.8).spec
    store = make_dataset(spec, "random", tmp_path / "t.zarr", episodes=6, seed=0)
    data = store.load()
    assert data.terminals.any()
    ends = data.episode_ends - 1
    assert (data.terminals[ends] | data.timeouts[ends]).all()
    np.testing.assert_array_equal(data.discounts, (~data.terminals).astype(np.float32))


def test_errors(tmp_path, policy_file):
    with pytest.raises(GenerateError, match="unknown quality"):
        make_dataset(SPEC, "mediocre", tmp_path / "x.zarr", episodes=1)
    with pytest.raises(GenerateError, match="behaviour policy file .* missing"):
        make_dataset(SPEC, "expert", tmp_path / "x.zarr", episodes=1, policy_file=tmp_path / "none.npz")
    only_medium = save_policy_file(tmp_path / "m.npz", "fake", {"medium": random_actor(3, 2, hidden=(4,))})
    with pytest.raises(GenerateError, match="no 'expert' policy"):
        make_dataset(SPEC, "medium-expert", tmp_path / "x.zarr", episodes=2, policy_file=only_medium)
    wrong = save_policy_file(tmp_path / "w.npz", "fake", {"expert": random_actor(5, 2, hidden=(4,))})
    with pytest.raises(GenerateError, match="5-d states"):
        make_dataset(SPEC, "expert", tmp_path / "x.zarr", episodes=1, policy_file=wrong)
    walker = save_policy_file(tmp_path / "hc.npz", "HalfCheetah-v5", {"expert": random_actor(17, 6, hidden=(4,))})
    dmc = {"kind": "dmc", "domain": "walker", "task": "walk", "size": 84, "camera": 0, "action_repeat": 2}
    pytest.importorskip("dm_control")
    with pytest.raises(GenerateError, match="holds policies for HalfCheetah-v5, not walker_walk"):
        make_dataset(dmc, "expert", tmp_path / "x.zarr", episodes=1, policy_file=walker)
    assert default_policy_file(dmc).name == "walker_walk.npz"
    assert not list(tmp_path.glob("x.zarr*")) and not list(tmp_path.glob(".x.zarr*"))
