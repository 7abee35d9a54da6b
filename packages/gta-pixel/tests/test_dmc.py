"""The real simulators: dm_control state envs (no rendering) and 10-step renders, skipped cleanly where
dm_control, gymnasium's MuJoCo or an OpenGL backend is unavailable."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# This process only steps states: no OpenGL backend in it (see gta_pixel.tasks.load_dmc); renders run in children.
os.environ.setdefault("MUJOCO_GL", "disable")
pytest.importorskip("dm_control")


def test_state_env_through_gta_rl_make_env():
    from gta_pixel.gym_envs import module_env_id
    from gta_pixel.tasks import DmcCore
    from gta_rl.evaluation import make_env

    env = make_env(module_env_id("walker_walk"))
    assert env.spec.max_episode_steps == 500
    obs, _ = env.reset(seed=5)
    core = DmcCore("walker", "walk")
    np.testing.assert_array_equal(obs, core.reset(5))
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)
    for a in actions:
        o1, r1, te1, tr1, _ = env.step(a)
        o2, r2, te2, tr2 = core.step(a)
        np.testing.assert_array_equal(o1, o2)
        assert (r1, te1, tr1) == (r2, te2, tr2)
    env.close()
    core.close()
    with pytest.raises(ValueError, match="cannot import"):
        make_env("gta_pixel.nothing_here:gta_pixel/walker_walk-v0")


def test_dmc_action_repeat_sums_rewards():
    from dm_control import suite

    from gta_pixel.tasks import DmcCore

    core = DmcCore("cheetah", "run", action_repeat=2)
    assert (core.act_dim, core.state_dim, core.max_steps) == (6, 17, 500)
    env = suite.load("cheetah", "run", task_kwargs={"random": 3}, visualize_reward=False)
    np.testing.assert_array_equal(core.reset(3), core.flatten(env.reset().observation))
    a = np.full(6, 0.5, np.float32)
    for _ in range(3):
        _, reward, _, _ = core.step(a)
        expected = sum(env.step(a.astype(np.float64)).reward for _ in range(2))
        assert reward == pytest.approx(expected, rel=1e-12)


def test_walker_episode_is_vd4rls_evaluation_episode():
    """An evaluation episode as V-D4RL plays one (drqbc/dmc.py: float32 actions scaled from [-1, 1], repeated
    twice with rewards summed, ActionRepeatWrapper; train.py eval(): step until time_step.last(), sum the rewards):
    500 agent steps, the same return, score = return / 10 (V-D4RL's 0-100 scale)."""
    from dm_control import suite

    from gta_pixel.evaluate import normalized
    from gta_pixel.pixelstore import _ref_scores
    from gta_pixel.tasks import DmcCore

    env = suite.load("walker", "walk", task_kwargs={"random": 7}, visualize_reward=False)
    core = DmcCore("walker", "walk")
    np.testing.assert_array_equal(core.reset(7), core.flatten(env.reset().observation))
    actions = np.random.default_rng(0).uniform(-1, 1, (600, 6)).astype(np.float32)
    ref_return, ref_steps, last = 0.0, 0, False
    while not last:  # V-D4RL: ActionRepeatWrapper(2) around the suite env, until last()
        reward, discount = 0.0, 1.0
        for _ in range(2):
            ts = env.step(actions[ref_steps].astype(np.float64))
            reward += (ts.reward or 0.0) * discount
            discount *= ts.discount
            if ts.last():
                break
        ref_return, ref_steps, last = ref_return + reward, ref_steps + 1, ts.last()
    ours, steps, done = 0.0, 0, False
    while not done:
        _, reward, terminated, truncated = core.step(actions[steps])
        ours, steps, done = ours + reward, steps + 1, terminated or truncated
        assert not terminated
    assert steps == ref_steps == core.max_steps == 500
    assert ours == pytest.approx(ref_return, rel=1e-12)
    assert normalized(np.array([ours]), _ref_scores({"kind": "dmc"}))[0] == pytest.approx(ours / 10)
    core.close()


def _render_in_subprocess(body: str) -> None:
    """Run a render check in a fresh interpreter. An OpenGL backend loads its own LLVM (Mesa's llvmpipe), which
    crashes a later import of Triton's LLVM in the same process (gta-rl's fused kernels): rendering must never
    happen in the test process itself. Exit 77 from the child means "no offscreen rendering here": a skip."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from gta_pixel.errors import TaskError

        def render_or_skip(make):
            try:
                task = make()
                task.reset(0)
            except TaskError as exc:
                print(f"no offscreen rendering here: {exc}")
                sys.exit(77)
            return task
    """) + textwrap.dedent(body)
    gl = os.environ.get("MUJOCO_GL", "egl")
    env = {**os.environ, "MUJOCO_GL": "egl" if gl in ("disable", "off") else gl}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dmc_task_renders_10_steps():
    _render_in_subprocess("""
        from gta_pixel.tasks import DmcTask

        task = render_or_skip(lambda: DmcTask("walker", "walk", size=32))
        state, frame = task.reset(1)
        frames = [frame]
        for _ in range(10):
            state, frame, reward, terminated, truncated = task.step(np.zeros(6, np.float32))
            frames.append(frame)
            assert 0.0 <= reward <= 2.0 and not terminated and not truncated
        assert frame.shape == (3, 32, 32) and frame.dtype == np.uint8 and state.shape == (24,)
        assert len({f.tobytes() for f in frames}) > 1  # the walker falls: the frames change
        info = task.renderer()
        assert info["shadowsize"] > 0 and "gl_renderer" in info
        task.close()
    """)


def test_gym_task_renders_10_steps():
    pytest.importorskip("gymnasium.envs.mujoco")
    _render_in_subprocess("""
        from gta_pixel.tasks import GymTask

        task = render_or_skip(lambda: GymTask("Hopper-v5", size=24))
        state, frame = task.reset(0)
        assert frame.shape == (3, 24, 24) and state.shape == (task.state_dim,) and task.max_steps == 1000
        for _ in range(10):
            state, frame, reward, terminated, truncated = task.step(np.zeros(task.act_dim, np.float32))
        assert frame.dtype == np.uint8
        task.close()
    """)


@pytest.mark.parametrize("name", ["walker_walk", "cheetah_run"])
def test_dmc_restarts_bit_exactly_from_a_recorded_state(name):
    """What medium-replay rests on: the state a state env reports after a reset (gta-rl sac records it) restarts
    another instance of the task, reset with another seed, on exactly the same trajectory. (cheetah_run settles
    200 physics steps in its reset: its warm-start accelerations must be part of the state.)"""
    from gta_pixel.errors import TaskError
    from gta_pixel.gym_envs import DmcStateEnv
    from gta_pixel.tasks import DmcCore

    domain, task = name.split("_")
    env = DmcStateEnv(domain, task)
    obs, _ = env.reset(seed=3)
    start = env.state_vector()
    actions = np.random.default_rng(1).uniform(-1, 1, (25, env.core.act_dim)).astype(np.float32)
    recorded = [obs] + [env.step(a)[:2] for a in actions]
    core = DmcCore(domain, task)
    core.reset(99)
    core.step(actions[0])  # mid-episode: the restart must also reset the step counter
    np.testing.assert_array_equal(core.reset_to_state(start), recorded[0])
    for a, (o, r) in zip(actions, recorded[1:], strict=True):
        o2, r2, _, _ = core.step(a)
        np.testing.assert_array_equal(o2, o)
        assert r2 == r
    with pytest.raises(TaskError, match=f"a {name} simulator state has {start.size} numbers, got 3"):
        core.reset_to_state(np.zeros(3))
    env.close()
    core.close()


def test_sac_run_export_resimulates_its_buffer(tmp_path):
    """The whole chain without rendering: gta-rl sac on the state env records episode start states;
    export_behaviour writes the policy file and the replay file of the first K = medium-step transitions, which
    re-simulates in the task to the buffer's observations and rewards bit for bit."""
    from gta_data.policies import load_policy_file
    from gta_pixel.behaviour import export_behaviour
    from gta_pixel.errors import GenerateError
    from gta_pixel.gym_envs import module_env_id
    from gta_pixel.resimulate import ResimCheck, load_replay
    from gta_pixel.tasks import DmcCore
    from gta_rl.behaviour import SACConfig, replay_episodes, train_sac

    # Warm-up actions only (no updates: what is tested is the recording, not the learning).
    cfg = SACConfig(env_id=module_env_id("walker_walk"), total_steps=700, hidden=(8,), batch_size=8,
                    learning_starts=700, checkpoint_every=350, eval_episodes=1, device="cpu")
    train_sac(cfg, tmp_path / "run")
    out = export_behaviour(tmp_path / "run", "walker_walk", tmp_path / "policies", expert=False)
    k = out["picks"]["medium"]["step"]
    assert list(load_policy_file(out["policy_file"]).actors) == ["medium"]
    core = DmcCore("walker", "walk")
    spec = {"kind": "dmc", "domain": "walker", "task": "walk"}
    replay, prov = load_replay(spec, out["replay_file"], core)
    assert replay.num_transitions == k and prov["replay_provenance"]["upto_step"] == k
    check, offset = ResimCheck(), 0
    for e, recorded in enumerate(replay_episodes(tmp_path / "run", k)):
        obs = [core.reset_to_state(replay.starts[e])]
        rewards = []
        for action in replay.actions[offset:offset + replay.lengths[e]]:
            o, r, terminated, truncated = core.step(action)
            obs.append(o)
            rewards.append(r)
        offset += replay.lengths[e]
        np.testing.assert_array_equal(np.stack(obs[:-1]), recorded.observations)
        np.testing.assert_array_equal(np.stack(obs[1:]), recorded.next_observations)
        np.testing.assert_array_equal(np.asarray(rewards, np.float32), recorded.rewards)
        check.add(np.asarray(rewards), obs[-1], len(rewards), terminated, replay.returns[e], replay.last_obs[e],
                  int(replay.lengths[e]), bool(replay.terminal[e]))
    assert check.episodes == len(replay.lengths) and check.transitions == k
    assert (check.max_return_error, check.max_last_obs_error, check.ending_mismatches) == (0.0, 0.0, 0)
    core.close()
    # The medium picked on the checkpoints' data returns (stochastic actor, as make collects data).
    scored = export_behaviour(tmp_path / "run", "walker_walk", tmp_path / "p2", medium_return=0.0, pick_episodes=1)
    assert [c["step"] for c in scored["data_returns"]] == [350, 700]
    assert scored["picks"]["medium"]["data_return"] == min(c["data_return"] for c in scored["data_returns"])
    assert set(load_policy_file(scored["policy_file"]).actors) == {"medium", "expert"}
    with pytest.raises(GenerateError, match="is a run of .*walker_walk-v0, not of the state env of cheetah_run"):
        export_behaviour(tmp_path / "run", "cheetah_run", tmp_path / "policies")
    with pytest.raises(GenerateError, match="not a SAC run directory"):
        export_behaviour(tmp_path / "policies", "walker_walk", tmp_path / "policies")


def test_make_medium_replay_renders_a_replay_file(tmp_path):
    """`gta-pixel make walker_walk medium-replay` on a two-episode replay file (3 and 2 steps): the store's
    states are the recorded ones, every frame rendered, the check all zero."""
    _render_in_subprocess(f"""
        from gta_data.replay import ReplayFile, save_replay_file
        from gta_pixel.generate import make_dataset
        from gta_pixel.gym_envs import module_env_id
        from gta_pixel.tasks import DmcCore

        render_or_skip(lambda: __import__("gta_pixel.tasks").tasks.DmcTask("walker", "walk", size=16))
        core = DmcCore("walker", "walk")
        rng = np.random.default_rng(0)
        starts, actions, states, returns = [], [], [], []
        for e, length in enumerate((3, 2)):
            states.append(core.reset(10 + e))
            starts.append(core.simulator_state())
            ret = 0.0
            for _ in range(length):
                a = rng.uniform(-1, 1, 6).astype(np.float32)
                o, r, _, _ = core.step(a)
                actions.append(a)
                states.append(o)
                ret += float(np.float32(r))
            returns.append(ret)
        replay = ReplayFile(module_env_id("walker_walk"), np.stack(starts), np.array([3, 2]), np.zeros(2, bool),
                            np.stack(actions), np.array(returns), np.stack([states[3], states[6]]))
        path = save_replay_file(r"{tmp_path}/walker_walk-medium-replay.npz", replay)
        spec = {{"kind": "dmc", "domain": "walker", "task": "walk", "size": 16, "camera": 0, "action_repeat": 2}}
        store = make_dataset(spec, "medium-replay", r"{tmp_path}/mr.zarr", episodes=None, replay_file=path)
        data = store.load()
        assert (store.num_steps, store.num_episodes, store.num_frames) == (5, 2, 7)
        np.testing.assert_array_equal(data.states, np.stack(states))
        np.testing.assert_array_equal(data.actions, np.stack(actions))
        assert len({{f.tobytes() for f in data.frames}}) == 7
        check = store.provenance["replay_check"]
        assert (check["max_return_error"], check["max_last_obs_error"], check["ending_mismatches"]) == (0, 0, 0)
        assert store.renderer["mujoco_gl"] == "egl" and store.provenance["simulators"]["dm-control"]
    """)


def test_gym_medium_replay_from_gta_data_replay_file(tmp_path):
    """gymnasium tasks re-render gta-data's locomotion replay files (recorded on another machine): the first two
    episodes of walker2d's reproduce the recorded returns and last observations exactly."""
    pytest.importorskip("gymnasium.envs.mujoco")
    from gta_data.policies import policy_dir

    if not (policy_dir() / "walker2d-medium-replay.npz").is_file():
        pytest.skip("gta-data's walker2d-medium-replay.npz is not here")
    _render_in_subprocess(f"""
        from gta_pixel.generate import make_dataset
        from gta_pixel.tasks import GymTask, parse_task

        render_or_skip(lambda: GymTask("Walker2d-v5", size=16))
        store = make_dataset(parse_task("gym:Walker2d-v5", size=16), "medium-replay", r"{tmp_path}/w.zarr", episodes=2)
        check = store.provenance["replay_check"]
        assert check["episodes"] == 2 and check["transitions"] == store.num_steps > 0
        assert (check["max_return_error"], check["max_last_obs_error"], check["ending_mismatches"]) == (0, 0, 0)
        assert store.provenance["replay_file"].endswith("walker2d-medium-replay.npz")
    """)


def test_shipped_walker_walk_files_resimulate_exactly():
    """The shipped walker_walk files fit each other and the task, and the replay file re-simulates exactly on the
    machine running the tests (MuJoCo must compute as where the run was recorded): its first and last
    episodes, states only."""
    from gta_data.policies import load_policy_file
    from gta_pixel.behaviour import default_policy_file, default_replay_file
    from gta_pixel.resimulate import ResimCheck, load_replay
    from gta_pixel.tasks import DmcCore

    spec = {"kind": "dmc", "domain": "walker", "task": "walk"}
    if not default_replay_file(spec).is_file():
        pytest.skip("no shipped walker_walk replay file")
    medium = load_policy_file(default_policy_file(spec)).actors["medium"]
    core = DmcCore("walker", "walk")
    replay, prov = load_replay(spec, None, core)
    assert (medium.obs_dim, medium.act_dim) == (core.state_dim, core.act_dim)
    assert prov["replay_provenance"]["upto_step"] == medium.info["step"] == replay.num_transitions
    offsets = np.concatenate([[0], np.cumsum(replay.lengths)])
    check = ResimCheck()
    for e in (0, replay.num_episodes - 1):
        state, rewards = core.reset_to_state(replay.starts[e]), []
        for action in replay.actions[offsets[e]:offsets[e + 1]]:
            state, reward, terminated, _ = core.step(action)
            rewards.append(reward)
        check.add(np.asarray(rewards), state, len(rewards), terminated, replay.returns[e], replay.last_obs[e],
                  int(replay.lengths[e]), bool(replay.terminal[e]))
    assert (check.max_return_error, check.max_last_obs_error, check.ending_mismatches) == (0.0, 0.0, 0)
    core.close()
