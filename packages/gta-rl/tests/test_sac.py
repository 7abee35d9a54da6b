import json
import math
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gta_rl.behaviour import (
    STATE,
    SACAgent,
    SACConfig,
    SACError,
    export_policy_file,
    export_replay,
    export_replay_file,
    pick_checkpoints,
    read_checkpoints,
    replay_episodes,
    train_sac,
)
from gta_rl.checkpoint import load_checkpoint
from gta_rl.cli import app

TINY = dict(env_id="Pendulum-v1", hidden=(16, 16), batch_size=32, learning_starts=100, checkpoint_every=200,
            eval_episodes=1, log_every=100, num_envs=2, total_steps=600)


def _agent(obs_dim=3, act_dim=2, low=(-2.0, 0.0), high=(2.0, 1.0), **kw):
    cfg = SACConfig(env_id="x", hidden=(8, 8), **kw)
    return SACAgent(cfg, obs_dim, act_dim, np.asarray(low, np.float32), np.asarray(high, np.float32),
                    torch.device("cpu"))


def test_log_prob_matches_torch_distributions():
    agent = _agent()
    obs = torch.randn(64, 3)
    noise = torch.randn(64, 2)
    action, log_prob = agent.sample(obs, noise)
    mean, log_std = agent.distribution(obs)
    # float64 reference: Normal pushed through tanh and the affine map to the env bounds.
    from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

    dist = TransformedDistribution(Normal(mean.double(), log_std.exp().double()),
                                   [TanhTransform(), AffineTransform(agent.bias.double(), agent.scale.double())])
    u = mean.double() + log_std.exp().double() * noise.double()
    ref_action = torch.tanh(u) * agent.scale.double() + agent.bias.double()
    torch.testing.assert_close(action.double(), ref_action, atol=1e-5, rtol=0)
    # Evaluate the reference at the pre-tanh point (inverting tanh near +-1 is ill-conditioned).
    ref_logp = (Normal(mean.double(), log_std.exp().double()).log_prob(u)
                - torch.log(1 - torch.tanh(u) ** 2) - agent.scale.double().log()).sum(-1)
    torch.testing.assert_close(log_prob.double(), ref_logp, atol=1e-4, rtol=1e-5)
    inside = (ref_action - agent.bias).abs() < 0.99 * agent.scale
    rows = inside.all(-1)
    torch.testing.assert_close(log_prob.double()[rows], dist.log_prob(ref_action).sum(-1)[rows], atol=1e-3, rtol=1e-4)
    assert ((action >= torch.tensor([-2.0, 0.0])) & (action <= torch.tensor([2.0, 1.0]))).all()
    assert (log_std >= -5).all() and (log_std <= 2).all()


def test_update_moves_critic_towards_bellman_target():
    torch.manual_seed(0)
    agent = _agent(obs_dim=3, act_dim=2, low=(-1, -1), high=(1, 1), critic_lr=1e-2)
    b = 64
    obs, act = torch.randn(b, 3), torch.rand(b, 2) * 2 - 1
    # Terminal transitions: the Bellman target is the reward itself, here a smooth function to fit.
    rew, term = obs[:, 0] - 0.5 * act[:, 1], torch.ones(b)
    losses = [agent.update(obs, act, rew, obs, term)[0].item() for _ in range(200)]
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
    assert int(agent.update_step) == 200
    # The temperature falls while the policy's entropy exceeds the target -|A|.
    assert agent.log_alpha.item() < 0


def test_sac_learns_pendulum(tmp_path):
    """5000 steps on one CPU thread (~12 s): the deterministic policy of the last two checkpoints swings the
    pendulum up and holds it (return > -300; a random policy gets about -1200). Not only the last one: at
    this stage an evaluation can still miss the swing-up from one of its 3 starts (seed 0 with float32 Adam
    bias corrections: -130 at 4000 steps, -524 at 5000, one episode failing; seeds 1-3: -130, -128, -130)."""
    cfg = SACConfig(env_id="Pendulum-v1", total_steps=5000, hidden=(64, 64), batch_size=256, learning_starts=500,
                    actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, checkpoint_every=1000, eval_episodes=3,
                    log_every=500, seed=0)
    result = train_sac(cfg, tmp_path / "run")
    ckpts = result["checkpoints"]
    assert [c["step"] for c in ckpts] == [1000, 2000, 3000, 4000, 5000]
    assert ckpts[0]["eval_return"] < -800
    assert max(c["eval_return"] for c in ckpts[-2:]) > -300, ckpts
    assert ckpts[-1]["eval_return"] > -800, ckpts
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 5000 and metrics[-1]["updates"] == 4500
    assert {"critic_loss", "actor_loss", "alpha", "entropy", "train_return"} <= set(metrics[-1])

    # The numpy policy of gta-data matches the torch actor it came from.
    from gta_data.policies import load_policy_file

    picks = pick_checkpoints(ckpts)
    assert picks["expert"]["eval_return"] == max(c["eval_return"] for c in ckpts)
    path = export_policy_file(tmp_path / "run", tmp_path / "p.npz", {**picks, "final": ckpts[-1]})
    policies = load_policy_file(path)
    assert policies.env_id == "Pendulum-v1" and policies.actors["final"].info["step"] == 5000
    state, _ = load_checkpoint(tmp_path / "run" / STATE)
    agent = SACAgent(cfg, 3, 1, np.array([-2.0], np.float32), np.array([2.0], np.float32), torch.device("cpu"))
    agent.load_full_state_dict({k: v for k, v in state.items() if not k.startswith("buffer.")})
    obs = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    noise = np.random.default_rng(1).standard_normal((32, 1)).astype(np.float32)
    actor = policies.actors["final"]
    np.testing.assert_allclose(actor.act(obs), agent.act(torch.from_numpy(obs)).numpy(), atol=1e-5)
    sampled, _ = agent.sample(torch.from_numpy(obs), torch.from_numpy(noise))
    np.testing.assert_allclose(actor.act(obs, noise), sampled.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(actor.sample(obs, np.random.default_rng(1)), sampled.detach().numpy(), atol=1e-5)


def test_pick_checkpoints():
    ck = [{"step": s, "eval_return": r} for s, r in [(1, -10), (2, 35), (3, 60), (4, 100), (5, 120), (6, 90)]]
    picks = pick_checkpoints(ck)
    assert picks["expert"]["step"] == 5 and picks["medium"]["step"] == 2  # 35 is closest to 120 / 3
    assert pick_checkpoints(ck, medium_return=95)["medium"]["step"] == 4  # a target return instead of 1/3
    with pytest.raises(SACError, match="no checkpoints"):
        pick_checkpoints([])


def test_mujoco_replay_file_resimulates_the_buffer(tmp_path):
    """The medium-replay chain on a real (tiny) MuJoCo run with two env copies and an interruption: the
    replay file (initial states + actions) re-simulated by gta-data gives exactly the buffer's rows."""
    from gta_data.recipes import make_dataset

    cfg = SACConfig(**{**TINY, "env_id": "Hopper-v5", "total_steps": 700, "checkpoint_every": 250})
    train_sac(cfg, tmp_path / "run", stop_after=400)  # "killed" at 400, last state at 250
    train_sac(cfg, tmp_path / "run", resume=True)
    path = export_replay_file(tmp_path / "run", tmp_path / "hopper-medium-replay.npz", 650)
    store = make_dataset("hopper-medium-replay", tmp_path / "mr.zarr", replay_file=path)
    episodes = list(replay_episodes(tmp_path / "run", 650))
    data = store.load()
    assert store.num_episodes == len(episodes) > 4 and store.num_transitions == 650
    for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(data, key), np.concatenate([getattr(e, key) for e in episodes]))
    check = store.provenance["replay_check"]
    assert check["max_return_error"] == 0 and check["max_last_obs_error"] == 0 and check["ending_mismatches"] == 0
    assert check["transitions"] == 650 and check["episodes"] == store.num_episodes  # the check ran on all
    # A run of an env without simulator states (Pendulum) exports a store, not a replay file.
    train_sac(SACConfig(**{**TINY, "total_steps": 200}), tmp_path / "pendulum")
    with pytest.raises(SACError, match="recorded no initial states"):
        export_replay_file(tmp_path / "pendulum", tmp_path / "p.npz", 100)
    assert not (tmp_path / "p.npz").exists()


def test_deadline_stops_with_a_checkpoint(tmp_path):
    import time

    cfg = SACConfig(**{**TINY, "total_steps": 100_000, "state_every": 400})
    result = train_sac(cfg, tmp_path / "run", deadline=time.time() + 3.0)
    assert 0 < result["step"] < 100_000
    assert result["checkpoints"][-1]["step"] == result["step"]  # evaluated where it stopped
    _, meta = load_checkpoint(tmp_path / "run" / STATE)
    assert meta["step"] == result["step"]  # and resumable from there


def test_resume_and_replay_export(tmp_path):
    cfg = SACConfig(**TINY)
    full = train_sac(cfg, tmp_path / "full")
    # Killed at step 300: the last checkpoint is at 200, with each env copy 100 steps into an episode.
    part = train_sac(cfg, tmp_path / "part", stop_after=300)
    assert part["step"] == 300 and [c["step"] for c in part["checkpoints"]] == [200]
    shutil.copy(tmp_path / "part" / STATE, tmp_path / "at200.safetensors")
    # The full state alone (a run from before the small files; test_sac_loop tests the resume from those).
    (tmp_path / "part" / "resume.safetensors").unlink()
    resumed = train_sac(cfg, tmp_path / "part", resume=True)
    assert [c["step"] for c in resumed["checkpoints"]] == [200, 400, 600]
    # Up to the interruption the runs are identical (everything is a function of the seed).
    for a, b in zip(full["checkpoints"][:1], resumed["checkpoints"][:1], strict=True):
        assert a == b
        wa, _ = load_checkpoint(tmp_path / "full" / a["path"])
        wb, _ = load_checkpoint(tmp_path / "part" / b["path"])
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], atol=0, rtol=0)
    # The resumed run kept the buffer it had at step 200, and went on updating.
    before, meta = load_checkpoint(tmp_path / "at200.safetensors")
    after, _ = load_checkpoint(tmp_path / "part" / STATE)
    for k in ("obs", "act", "rew", "next_obs", "env"):
        torch.testing.assert_close(after[f"buffer.{k}"][:200], before[f"buffer.{k}"], atol=0, rtol=0)
    assert after["buffer.rew"].shape[0] == 600
    assert int(after["model.update_step"]) == 600 - 100 == int(load_checkpoint(tmp_path / "full" / STATE)[0]["model.update_step"])
    # Episodes open at the interruption end there with a timeout.
    open_rows = [r for r, o in zip(meta["last_row"], meta["open"], strict=True) if o]
    assert open_rows and after["buffer.trunc"][open_rows].all() and not before["buffer.trunc"][open_rows].any()
    metrics = [json.loads(line)["step"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert metrics == sorted(set(metrics))
    # The small files written after that resume re-simulate it, reset and cut episodes included.
    small = tmp_path / "small"
    small.mkdir()
    for name in ("config.json", "resume.safetensors", "actions.safetensors", "checkpoints.jsonl"):
        shutil.copy(tmp_path / "part" / name, small / name)
    assert load_checkpoint(small / "resume.safetensors", keys=())[1]["reset_steps"] == [0, 200]
    assert train_sac(cfg, small, resume=True)["step"] == 600  # (the record replays: else a SACError)

    # Medium-replay: the first K transitions, per env copy, split into episodes (Pendulum: 200 steps).
    store = export_replay(tmp_path / "full", tmp_path / "replay.zarr", 500)
    data = store.load()
    assert store.num_transitions == 500 and store.env_id == "Pendulum-v1"
    assert list(store.episode_lengths) == [200, 200, 50, 50]
    assert data.timeouts[store.episode_ends - 1].all() and not data.terminals.any()
    inside = np.ones(500, bool)
    inside[store.episode_ends - 1] = False
    np.testing.assert_array_equal(data.next_observations[inside], data.observations[1:][inside[:-1]])
    buf, _ = load_checkpoint(tmp_path / "full" / STATE)
    np.testing.assert_array_equal(np.sort(data.rewards), np.sort(buf["buffer.rew"][:500].numpy()))
    with pytest.raises(SACError, match="upto_step"):
        export_replay(tmp_path / "full", tmp_path / "bad.zarr", 10_000)
    assert not (tmp_path / "bad.zarr").exists()


def test_former_module_name_gives_the_same_tooling():
    import gta_rl.behaviour as behaviour
    import gta_rl.sac as sac

    assert sac.train_sac is train_sac and sac.export_replay_file is export_replay_file
    assert all(getattr(sac, name) is getattr(behaviour, name) for name in behaviour.__all__)


def test_run_errors(tmp_path):
    cfg = SACConfig(**TINY)
    with pytest.raises(SACError, match="nothing to resume"):
        train_sac(cfg, tmp_path / "none", resume=True)
    train_sac(cfg, tmp_path / "r", stop_after=200)
    with pytest.raises(SACError, match="not empty"):
        train_sac(cfg, tmp_path / "r")
    with pytest.raises(SACError, match="config differs"):
        train_sac(SACConfig(**{**TINY, "batch_size": 64}), tmp_path / "r", resume=True)
    with pytest.raises(SACError, match="positive"):
        SACConfig(**{**TINY, "num_envs": 0}).check()
    assert read_checkpoints(tmp_path / "r")[0]["step"] == 200
    # Execution settings may change on resume (here: the training envs in worker processes).
    resumed = train_sac(SACConfig(**{**TINY, "env_async": True}), tmp_path / "r", resume=True, stop_after=2)
    assert resumed["step"] == 202
    if not torch.cuda.is_available():
        with pytest.raises(SACError, match="cuda_graph needs a CUDA device"):
            SACConfig(**{**TINY, "cuda_graph": True}).check()
    with pytest.raises(SACError, match="not a SAC run"):
        read_checkpoints(tmp_path / "none")
    for bad, message in (({"seed": -1}, "seed must be in"), ({"actor_lr": -1.0}, "actor_lr must be positive"),
                         ({"gamma": 1.5}, "gamma and tau")):
        with pytest.raises(SACError, match=message):
            SACConfig(**{**TINY, **bad}).check()
    with pytest.raises(SACError, match="unknown device 'nosuch'"):  # the device resolver gta-rl train uses
        train_sac(SACConfig(**{**TINY, "device": "nosuch"}), tmp_path / "dev")
    # A start that saved nothing (stopped before its first checkpoint) is no dead end: it starts again.
    other = tmp_path / "other"  # another tool's run directory is never taken for an unstarted SAC run
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model": "diffusion"}))
    with pytest.raises(SACError, match="not empty"):
        train_sac(cfg, other)
    assert json.loads((other / "config.json").read_text()) == {"model": "diffusion"}
    early = tmp_path / "early"
    early.mkdir()
    (early / "config.json").write_text(json.dumps({"env_id": TINY["env_id"], "total_steps": 10}))
    (early / "metrics.jsonl").write_text('{"step": 5}\n')
    assert train_sac(cfg, early, stop_after=200)["step"] == 200
    with pytest.raises(SACError, match="not empty"):  # ... but a run with checkpoints is never restarted
        train_sac(cfg, early)
    pytest.importorskip("gymnasium_robotics")
    with pytest.raises(SACError, match="needs vector .Box. observations"):
        train_sac(SACConfig(**{**TINY, "env_id": "PointMaze_UMaze-v3"}), tmp_path / "maze")


def test_cli(tmp_path):
    runner = CliRunner()
    args = ["sac", "--env", "Pendulum-v1", "--out", str(tmp_path / "run"), "--steps", "200", "--hidden", "8,8",
            "--batch-size", "16", "--learning-starts", "100", "--checkpoint-every", "100", "--eval-episodes", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "step 100: eval return" in result.output and "step 200" in result.output
    bad = runner.invoke(app, ["sac", "--env", "NoSuchEnv-v0", "--out", str(tmp_path / "x")])
    # (gymnasium-robotics prints a notice of its own when it is imported; ours is one line.)
    errors = [line for line in bad.output.splitlines() if line.startswith("error:")]
    assert bad.exit_code == 1 and len(errors) == 1 and "NoSuchEnv-v0" in errors[0]
    assert not (tmp_path / "x").exists()
    assert math.isfinite(read_checkpoints(tmp_path / "run")[-1]["eval_return"])
    timed = runner.invoke(app, ["sac", "--env", "Pendulum-v1", "--out", str(tmp_path / "timed"), "--steps", "10000000",
                                "--hidden", "8,8", "--batch-size", "16", "--learning-starts", "100",
                                "--eval-episodes", "1", "--minutes", "0.05", "--state-every", "100000"])
    assert timed.exit_code == 0, timed.output
    last = read_checkpoints(tmp_path / "timed")[-1]
    assert 0 < last["step"] < 10_000_000 and f"step {last['step']}: eval return" in timed.output


def test_train_behaviour_policies_quick(tmp_path):
    """The GPU tool's CPU smoke mode end to end for one env: SAC, checkpoint picks, the policy file, the
    medium-replay file, and gta-data recipes on them."""
    import subprocess
    import sys
    from pathlib import Path

    from gta_data.recipes import make_dataset

    repo = Path(__file__).resolve().parents[3]
    out = tmp_path / "behaviour.json"
    proc = subprocess.run([sys.executable, str(repo / "tools" / "train_behaviour_policies.py"), "--quick",
                           "--env", "hopper", "--num-envs", "2", "--medium", "third",
                           "--run-dir", str(tmp_path / "runs"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("hopper")
    row = json.loads(out.read_text())["results"][0]
    assert 1500 <= row["steps"] <= 1501 and row["medium"]["step"] <= row["expert"]["step"]  # 2 env copies
    policy_dir = tmp_path / "runs" / "policies"
    assert (policy_dir / "hopper.npz").is_file() and row["replay_transitions"] == row["medium"]["step"]
    replay = make_dataset("hopper-medium-replay", tmp_path / "mr.zarr", replay_file=policy_dir / "hopper-medium-replay.npz")
    assert replay.num_transitions == row["medium"]["step"]
    assert row["replay_check"]["max_last_obs_error"] == 0 and row["replay_check"]["ending_mismatches"] == 0
    assert row["replay_check"]["transitions"] == row["medium"]["step"] == row["replay_transitions"]
    expert = make_dataset("hopper-expert", tmp_path / "e.zarr", size=300, policy_file=policy_dir / "hopper.npz")
    assert expert.provenance["policy_info"]["step"] == row["expert"]["step"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile", [False, True], ids=["graph", "compile+graph"])
def test_cuda_graph_update_equals_eager(compile):
    from gta_rl.behaviour import ReplayBuffer, update_runner

    device = torch.device("cuda")
    cfg = SACConfig(env_id="x", hidden=(64, 64), batch_size=128, device="cuda")
    rng = np.random.default_rng(0)
    rows = {"obs": rng.normal(size=(1000, 5)), "act": rng.uniform(-1, 1, (1000, 2)), "rew": rng.normal(size=1000),
            "next_obs": rng.normal(size=(1000, 5)), "term": rng.random(1000) < 0.05,
            "trunc": np.zeros(1000, bool), "env": np.zeros(1000, np.int32)}
    results = []
    for graph in (False, True):
        agent = SACAgent(cfg, 5, 2, -np.ones(2, np.float32), np.ones(2, np.float32), device)
        buffer = ReplayBuffer(2000, 5, 2, device)
        buffer.add({k: v[:600] for k, v in rows.items()})
        runner = update_runner(agent, buffer, 128, cuda_graph=graph, compile=graph and compile)
        metrics = [runner().clone() for _ in range(10)]
        buffer.add({k: v[600:] for k, v in rows.items()})  # the graph must see the new size
        metrics += [runner().clone() for _ in range(10)]
        results.append((torch.stack(metrics).cpu(), {k: v.cpu() for k, v in agent.state_dict().items()}))
    tol = 1e-4 if compile else 1e-5  # inductor's fused kernels round differently
    torch.testing.assert_close(results[0][0], results[1][0], atol=tol, rtol=tol)
    for k, v in results[0][1].items():
        torch.testing.assert_close(v, results[1][1][k], atol=tol, rtol=tol)
    assert int(results[1][1]["update_step"]) == 20
