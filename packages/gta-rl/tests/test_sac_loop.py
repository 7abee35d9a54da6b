"""The SAC loop's data paths: the staged loop (default) against the readable one, and the stated semantics of
``transfer_every`` and ``overlap`` against a reference written out step by step."""

import json
import time

import numpy as np
import pytest
import torch

from gta_rl.behaviour import STATE, ReplayBuffer, SACAgent, SACConfig, SACError, train_sac, update_runner
from gta_rl.behaviour.config import S_EXPLORE, S_WARMUP
from gta_rl.checkpoint import load_checkpoint
from gta_rl.rng import SeedStreams

TINY = dict(env_id="Pendulum-v1", hidden=(16, 16), batch_size=32, learning_starts=100, checkpoint_every=200,
            eval_episodes=1, log_every=100, num_envs=2, total_steps=600)


def _run(tmp_path, name, **kw):
    train_sac(SACConfig(**kw), tmp_path / name)
    state, meta = load_checkpoint(tmp_path / name / STATE)
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("steps_per_s")
    return state, meta, records, (tmp_path / name / "checkpoints.jsonl").read_text()


def _assert_same(a, b):
    (sa, ma, ra, ca), (sb, mb, rb, cb) = a, b
    assert ma == mb and ra == rb and ca == cb  # losses, returns, checkpoint evaluations
    assert set(sa) == set(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)


@pytest.mark.parametrize("env", ["Pendulum-v1", "Hopper-v5"])
def test_staged_loop_equals_readable(tmp_path, env):
    """Default settings: the same transitions, losses, checkpoints and final state as the readable loop
    (Hopper: terminations and autoresets of two env copies at different steps; 0.5 updates per step)."""
    kw = {**TINY, "env_id": env, "total_steps": 500, "updates_per_step": 0.5 if env == "Hopper-v5" else 1.0}
    readable = _run(tmp_path, "readable", **kw, readable_loop=True)
    staged = _run(tmp_path, "staged", **kw)
    _assert_same(readable, staged)
    assert int(staged[0]["model.update_step"]) > 100


def _reference(cfg: SACConfig, rows: dict[str, np.ndarray], device: str = "cpu") -> dict[str, torch.Tensor]:
    """The stated semantics, step by step, for one env copy: replays the run's recorded transitions through
    the readable buffer and update, asserting that each recorded action is the one the rules give, and
    returns the final agent state.

    - transfer_every = K: a transition is visible to updates once K or more are staged (they are then copied
      together), or at a checkpoint;
    - overlap: the actions of vector-env step i come from the actor before the updates owed by step i - 1
      (those run while step i is simulated); after a checkpoint (which runs every update owed) and after an
      autoreset step (which collects nothing and owes none) they are not stale.
    """
    low, high = np.array([-2.0], np.float32), np.array([2.0], np.float32)
    agent = SACAgent(cfg, 3, 1, low, high, torch.device(device))
    buffer = ReplayBuffer(cfg.total_steps + 1, 3, 1, torch.device(device))
    runner = update_runner(agent, buffer, cfg.batch_size)
    owed = 0.0
    staged: list[int] = []

    def learn(prev, step):
        nonlocal owed
        if step > cfg.learning_starts:
            owed += (step - max(prev, cfg.learning_starts)) * cfg.updates_per_step
        while owed >= 1.0:
            runner()
            owed -= 1.0

    def commit():
        if staged:
            buffer.add({k: rows[k][staged] for k in rows})
            staged.clear()

    def expected_action(step, obs):
        streams = SeedStreams(agent.seeds, torch.tensor(step, device=device))
        if step < cfg.learning_starts:
            return agent.bias + agent.scale * (2.0 * streams.uniform(S_WARMUP, (1, 1))[0] - 1.0)
        with torch.no_grad():
            obs = torch.from_numpy(rows["obs"][None, step]).to(device)
            return agent.sample(obs, streams.normal(S_EXPLORE, (1, 1))[0])[0]

    ends = rows["term"].astype(bool) | rows["trunc"]
    pending = (0, 0)
    n = len(rows["rew"])
    for r in range(n):
        # After an episode's last transition comes an autoreset step: no transition, nothing owed.
        for collects in ([False, True] if r > 0 and ends[r - 1] else [True]):
            step = r
            action = expected_action(step, rows["obs"]) if collects else None
            if cfg.overlap:
                learn(*pending)
                pending = (step, step)
            if collects:
                torch.testing.assert_close(torch.from_numpy(rows["act"][r][None]), action.cpu(), atol=0, rtol=0)
                staged.append(r)
            after = step + int(collects)
            if len(staged) >= cfg.transfer_every:
                commit()
            if cfg.overlap:
                pending = (step, after)
            else:
                learn(step, after)
    commit()
    learn(*pending)
    agent.env_step.fill_(n)
    return {k: v.cpu() for k, v in agent.full_state_dict().items()}


@pytest.mark.parametrize("options", [{"transfer_every": 7}, {"overlap": True}, {"overlap": True, "transfer_every": 5}],
                         ids=["transfer7", "overlap", "overlap+transfer5"])
def test_transfer_and_overlap_semantics(tmp_path, options):
    cfg = SACConfig(**{**TINY, "num_envs": 1, "total_steps": 450, "checkpoint_every": 450, "log_every": 1000,
                       "learning_starts": 60, **options})
    train_sac(cfg, tmp_path / "run")
    state, _ = load_checkpoint(tmp_path / "run" / STATE)
    rows = {k: state[f"buffer.{k}"].numpy() for k in ("obs", "act", "rew", "next_obs", "term", "trunc", "env")}
    assert rows["trunc"][199] and rows["trunc"][399]  # two autoresets of Pendulum's 200-step episodes
    reference = _reference(cfg, rows)
    assert int(reference["model.update_step"]) == 450 - 60
    for k, v in reference.items():
        torch.testing.assert_close(state[k], v, atol=0, rtol=0, msg=k)
    # The options change what is computed: the default rules do not reproduce this run.
    default = SACConfig(**{**TINY, "num_envs": 1, "total_steps": 450, "checkpoint_every": 450, "log_every": 1000,
                           "learning_starts": 60})
    with pytest.raises(AssertionError):
        _reference(default, rows)


def test_buffer_samples_only_committed_rows():
    buffer = ReplayBuffer(100, 2, 1, torch.device("cpu"), stage_rows=8)
    rows = {"obs": np.arange(8.0).reshape(4, 2), "act": np.ones((4, 1)), "rew": np.arange(4.0), "next_obs": np.zeros((4, 2)),
            "term": np.zeros(4), "trunc": np.zeros(4, bool), "env": np.zeros(4, np.int32)}
    buffer.add(rows)
    assert (buffer.size, buffer.staged, buffer.count) == (0, 4, 4)
    buffer.commit()
    buffer.add({**{k: v[:3] for k, v in rows.items()}, "rew": np.array([10.0, 11.0, 12.0])})
    assert (buffer.size, buffer.count) == (4, 7)
    drawn = set()
    for counter in range(50):
        drawn |= set(buffer.sample(SeedStreams(torch.tensor([0]), torch.tensor(counter)), 16)["rew"].tolist())
    assert drawn == {0.0, 1.0, 2.0, 3.0}  # every committed row, none of the staged ones
    with pytest.raises(SACError, match="staged rows"):
        buffer.state()
    buffer.commit()
    state = buffer.state()
    np.testing.assert_array_equal(state["buffer.rew"].numpy(), [0, 1, 2, 3, 10, 11, 12])
    np.testing.assert_array_equal(state["buffer.obs"].numpy()[4:], rows["obs"][:3])
    with pytest.raises(SACError, match="staging buffer full"):
        buffer.add({k: np.concatenate([v, v, v]) for k, v in rows.items()})


def test_loop_option_errors():
    with pytest.raises(SACError, match="transfer_every must be positive"):
        SACConfig(**{**TINY, "transfer_every": 0})
    with pytest.raises(SACError, match="readable loop takes neither"):
        SACConfig(**{**TINY, "readable_loop": True, "overlap": True})


SMALL = ("config.json", "resume.safetensors", "actions.safetensors", "metrics.jsonl", "checkpoints.jsonl", "actors")


@pytest.mark.parametrize("options", [{}, {"overlap": True, "transfer_every": 3}], ids=["staged", "overlap+transfer3"])
def test_resume_from_small_files_equals_uninterrupted(tmp_path, options):
    """N steps, stop, copy only the small files (no state.safetensors, no buffer), resume to 2N: the same run
    as the uninterrupted one, bit for bit (Hopper: terminations, autoresets and episode start states of two
    env copies; the episodes in progress at step N go on)."""
    import shutil

    kw = {**TINY, "env_id": "Hopper-v5", "total_steps": 560, "checkpoint_every": 280, "log_every": 70,
          "state_every": 10_000, **options}
    full = _run(tmp_path, "full", **kw)
    cfg = SACConfig(**kw)
    train_sac(cfg, tmp_path / "part", stop_after=281)  # "killed" one env step after the checkpoint at 280
    assert not (tmp_path / "part" / STATE).exists()  # (state_every: the full state only at the end)
    small = tmp_path / "small"
    small.mkdir()
    for name in SMALL:
        src = tmp_path / "part" / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, small / name)
    size = sum(f.stat().st_size for f in small.rglob("*") if f.is_file())
    assert size < 200_000
    resumed = train_sac(cfg, small, resume=True)
    assert resumed["step"] >= 560 and resumed["checkpoints"][0]["step"] >= 280
    state, meta = load_checkpoint(small / STATE)
    records = [json.loads(line) for line in (small / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("steps_per_s")
    _assert_same(full, (state, meta, records, (small / "checkpoints.jsonl").read_text()))
    assert not state["buffer.trunc"][:280].any() or full[0]["buffer.trunc"][:280].any()  # no cut episodes


def test_resume_small_refuses_a_record_that_does_not_replay(tmp_path):
    cfg = SACConfig(**{**TINY, "env_id": "Hopper-v5", "total_steps": 400, "checkpoint_every": 200})
    train_sac(cfg, tmp_path / "r", stop_after=200)
    record, meta = load_checkpoint(tmp_path / "r" / "actions.safetensors")
    record["act"][150] += 0.25
    from gta_rl.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "r" / "actions.safetensors", record, meta)
    (tmp_path / "r" / STATE).unlink()
    with pytest.raises(SACError, match="did not reproduce the run"):
        train_sac(cfg, tmp_path / "r", resume=True)


def test_behaviour_session_dry_run(tmp_path):
    """tools/behaviour_session.py on CPU: a run started in its own process stops, its small files are packed,
    unpacked on "another machine", started again to the end and exported."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]

    def tool(*args):
        proc = subprocess.run([sys.executable, str(repo / "tools" / "behaviour_session.py"), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
        return proc.stdout

    a, b = tmp_path / "a", tmp_path / "b"
    tool("start", "--quick", "--env", "hopper", "--run-dir", str(a), "--stop-after", "300")
    assert '"running": false, "step": 300' in tool("wait", "--env", "hopper", "--run-dir", str(a), "--minutes", "2",
                                                   "--every", "1")
    tool("pack", "--env", "hopper", "--run-dir", str(a), "--out", str(tmp_path / "packed"))
    assert [p.name for p in (tmp_path / "packed").iterdir()] == ["hopper.tar.xz.00"]
    tool("unpack", "--from", str(tmp_path / "packed"), "--run-dir", str(b))
    assert not (b / "hopper" / STATE).exists() and (b / "hopper" / "resume.safetensors").exists()
    tool("start", "--quick", "--env", "hopper", "--run-dir", str(b))
    assert '"running": false, "step": 600' in tool("wait", "--env", "hopper", "--run-dir", str(b), "--minutes", "2",
                                                   "--every", "1")
    shipped = repo / "packages/gta-data/policies/hopper.npz"
    before = shipped.stat().st_mtime_ns
    # no --policy-dir: a dry run's tiny policies go beside the runs, never over the shipped ones
    tool("export", "--env", "hopper", "--run-dir", str(b), "--out", str(tmp_path / "e.json"), "--device", "cpu")
    row = json.loads((tmp_path / "e.json").read_text())[0]
    assert shipped.stat().st_mtime_ns == before
    assert row["steps"] == 600 and (b / "policies" / "hopper.npz").is_file()
    assert (b / "policies" / "hopper-medium-replay.npz").is_file()
    # The export is train_behaviour_policies.py's: the recipes re-simulate the medium-replay file exactly.
    assert row["replay_check"]["max_last_obs_error"] == 0 and row["replay_check"]["ending_mismatches"] == 0
    assert row["replay_transitions"] == row["medium"]["step"] <= 600


def test_session_refusals_are_one_line(tmp_path):
    """pack/export refuse a run still running (its files are being replaced); unpack refuses missing or damaged
    parts in one line; a finished (zombie) or unknown process is not running."""
    import importlib.util
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "tools" / "behaviour_session.py"
    spec = importlib.util.spec_from_file_location("behaviour_session", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    run = tmp_path / "runs" / "hopper"
    run.mkdir(parents=True)
    tool.pid_file(run).write_text(str(os.getpid()))
    assert tool.running(run)
    args = type("A", (), {"env": ["hopper"], "run_dir": str(tmp_path / "runs"), "out": str(tmp_path / "o"),
                          "src": str(tmp_path / "parts"), "device": "cpu", "policy_dir": None})()
    for cmd in (tool.cmd_pack, tool.cmd_export):
        with pytest.raises(SystemExit, match="hopper is still running"):
            cmd(args)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while child.poll() is None:
        pass
    tool.pid_file(run).write_text(str(child.pid))  # reaped: no such process
    assert not tool.running(run)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    tool.pid_file(run).write_text(str(zombie.pid))
    for _ in range(200):  # exited, not yet reaped by us: a zombie
        if Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            break
        time.sleep(0.01)
    assert not tool.running(run)
    zombie.wait()
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "hopper.tar.xz.01").write_bytes(b"x")
    with pytest.raises(SystemExit, match="are 01: one is missing"):
        tool.cmd_unpack(args)
    (parts / "hopper.tar.xz.00").write_bytes(b"\xfd7zXZ\x00 truncated")
    with pytest.raises(SystemExit, match="not a whole archive"):
        tool.cmd_unpack(args)


def test_pack_keeps_the_actors_d4rl_can_still_pick():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "tools" / "behaviour_session.py"
    spec = importlib.util.spec_from_file_location("behaviour_session", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    ck = [{"step": s, "eval_return": r, "path": f"a{s}"} for s, r in
          [(1, -10), (2, 35), (3, 60), (4, 100), (5, 120), (6, 90), (7, 50)]]
    # best 5; medium target 55: 60 (step 3) before the best and overall; latest 7.
    assert tool.actors_to_keep(ck, 55.0) == {"a5", "a3", "a7"}
    # target 93: 100 (step 4) up to the best, 90 (step 6) overall (if a later best comes).
    assert tool.actors_to_keep(ck, 93.0) == {"a5", "a4", "a6", "a7"}
    assert tool.actors_to_keep(ck, None) == {"a5", "a2", "a7"}  # 1/3 of 120 = 40: 35 (step 2), 50 is farther


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_staged_and_overlap_paths(tmp_path):
    """On CUDA (pinned staging, asynchronous copies, events): the staged loop equals the readable one, and
    overlap with transfer_every follows the step-by-step reference, bit for bit (eager updates)."""
    kw = {**TINY, "env_id": "Hopper-v5", "total_steps": 500, "device": "cuda"}
    _assert_same(_run(tmp_path, "readable", **kw, readable_loop=True), _run(tmp_path, "staged", **kw))
    cfg = SACConfig(**{**TINY, "num_envs": 1, "total_steps": 450, "checkpoint_every": 450, "log_every": 1000,
                       "learning_starts": 60, "device": "cuda", "overlap": True, "transfer_every": 5})
    train_sac(cfg, tmp_path / "run")
    state, _ = load_checkpoint(tmp_path / "run" / STATE)
    rows = {k: state[f"buffer.{k}"].numpy() for k in ("obs", "act", "rew", "next_obs", "term", "trunc", "env")}
    for k, v in _reference(cfg, rows, "cuda").items():
        torch.testing.assert_close(state[k], v, atol=0, rtol=0, msg=k)
