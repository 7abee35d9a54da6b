"""Multi-seed equivalence, exact resume, the fast paths, bad input and the CLI."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gta_data import StoreError
from gta_rl.algorithms import ConfigError, build_config, get_spec
from gta_rl.buffer import load_training_data
from gta_rl.checkpoint import load_checkpoint
from gta_rl.cli import app
from gta_rl.fast import StepRunner
from gta_rl.nets import BF16, FP32, StackedMLP
from gta_rl.training import RunConfig, RunError, load_run, train

TINY = {
    "td3bc": {"hidden": [16, 16]},
    "iql": {"hidden": [16, 16]},
    "cql": {"actor_hidden": [16, 16], "critic_hidden": [16, 16], "n_actions": 3},
    "mcq": {"actor_hidden": [16, 16], "critic_hidden": [16, 16], "vae_hidden": [16, 16], "num_sampled_actions": 3},
}


def make_agent(name, seeds, arithmetic=FP32):
    return get_spec(name).agent(build_config(name, None, TINY[name]), 2, 2, seeds, total_steps=30,
                                arithmetic=arithmetic)


@pytest.mark.parametrize("name", list(TINY))
def test_seed_in_stack_equals_seed_alone(name, point_store):
    data, _ = load_training_data([point_store])
    stacked, alone = make_agent(name, [4, 1, 9]), make_agent(name, [1])
    for step in range(30):
        for agent in (stacked, alone):
            agent.train_step(data, 32, actor_step=agent.is_actor_step(step))
    obs = torch.randn(1, 50, 2)
    torch.testing.assert_close(stacked.act(obs.expand(3, 50, 2))[1], alone.act(obs)[0], rtol=1e-4, atol=1e-5)
    # the other seeds really differ
    assert not torch.allclose(stacked.act(obs.expand(3, 50, 2))[0], alone.act(obs)[0], atol=1e-3)


@pytest.mark.parametrize("name", list(TINY))
def test_bf16_mode_tracks_fp32_and_keeps_seeds_independent(name, point_store):
    # --bf16 rounds hidden-layer matmul inputs to bf16: after 20 updates the policy is still close to the
    # fp32 run's (5%; a loose check, the learning tests and BENCHMARKS.md's halfcheetah run are the real
    # ones) but not equal to it, and a seed trained in a bf16 stack still equals the seed trained alone.
    data, _ = load_training_data([point_store])
    fp32, stacked, alone = make_agent(name, [1]), make_agent(name, [4, 1], BF16), make_agent(name, [1], BF16)
    for step in range(20):
        for agent in (fp32, stacked, alone):
            agent.train_step(data, 32, actor_step=agent.is_actor_step(step))
    obs = torch.randn(1, 50, 2)
    torch.testing.assert_close(stacked.act(obs.expand(2, 50, 2))[1], alone.act(obs)[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone.act(obs), fp32.act(obs), rtol=0.05, atol=0.05)
    assert not torch.equal(alone.act(obs), fp32.act(obs))
    nets = [m for m in alone.modules() if isinstance(m, StackedMLP)]
    assert nets and all(m.matmul_dtype == torch.bfloat16 for m in nets)  # target networks included


def test_multi_seed_run_equals_single_seed_runs(point_store, tmp_path):
    common = dict(steps=60, batch_size=32, eval_every=30, eval_episodes=4, log_every=30, overrides=TINY["td3bc"])
    both = train(RunConfig("td3bc", (str(point_store),), (0, 2), **common), tmp_path / "both")
    one = train(RunConfig("td3bc", (str(point_store),), (2,), **common), tmp_path / "one")
    assert both["seeds"]["2"]["final_score"] == pytest.approx(one["seeds"]["2"]["final_score"], abs=1e-3)
    assert both["seeds"]["0"]["final_score"] != pytest.approx(one["seeds"]["2"]["final_score"], abs=1e-3)


def _strip(path):
    return [{k: v for k, v in json.loads(x).items() if k != "updates_per_s"} for x in path.read_text().splitlines()]


@pytest.mark.parametrize(("name", "bf16"), [("td3bc", False), ("iql", False), ("td3bc", True)])
def test_resume_continues_exactly(name, bf16, point_store, tmp_path):
    common = dict(steps=60, batch_size=32, eval_every=30, eval_episodes=3, log_every=10, checkpoint_every=20,
                  overrides=TINY[name], bf16=bf16)
    cfg = RunConfig(name, (str(point_store),), (0, 1), **common)
    full = train(cfg, tmp_path / "full")
    train(cfg, tmp_path / "cut", stop_after=50)  # interrupted after step 50; last checkpoint at 40
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")[1]["step"] == 40
    assert not (tmp_path / "cut" / "results.json").exists()
    with pytest.raises(RunError, match="--resume"):
        train(cfg, tmp_path / "cut")
    resumed = train(cfg, tmp_path / "cut", resume=True)
    a, _ = load_checkpoint(tmp_path / "full" / "checkpoint.safetensors")
    b, _ = load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert full["seeds"] == resumed["seeds"]
    for seed in (0, 1):
        path = f"seed_{seed}/metrics.jsonl"
        assert _strip(tmp_path / "full" / path) == _strip(tmp_path / "cut" / path)


def _checkpoint(path):
    return load_checkpoint(path / "checkpoint.safetensors")


def _assert_same_checkpoint(a_dir, b_dir, same_scores=True):
    (a, meta_a), (b, meta_b) = _checkpoint(a_dir), _checkpoint(b_dir)
    if same_scores:
        assert meta_a == meta_b  # step and the evaluation history
    else:
        assert meta_a["step"] == meta_b["step"]
        assert [e["step"] for e in meta_a["history"]["evals"]] == [e["step"] for e in meta_b["history"]["evals"]]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _assert_same_run(a_dir, b_dir, seeds=(0, 1)):
    """The same final checkpoint and the same log records (a background evaluation's lines may follow
    the train lines written meanwhile, so the records are compared in (step, kind) order)."""
    _assert_same_checkpoint(a_dir, b_dir)
    key = lambda r: (r["step"], r["kind"])  # noqa: E731
    for seed in seeds:
        path = f"seed_{seed}/metrics.jsonl"
        assert sorted(_strip(a_dir / path), key=key) == sorted(_strip(b_dir / path), key=key)


@pytest.mark.parametrize("name", ["td3bc", "cql"])
def test_background_evaluation_equals_foreground(name, point_store, tmp_path):
    # Evaluations every 20 steps, a checkpoint with each. In the background the checkpoint of step 40 is
    # written at step 40, before its evaluation is in, and says so (pending_eval); a resume from it
    # evaluates step 40 again. Interrupted after step 50, both runs leave the same state at step 40.
    common = dict(steps=60, batch_size=32, eval_every=20, eval_episodes=3, log_every=10, overrides=TINY[name])
    fg = RunConfig(name, (str(point_store),), (0, 1), eval_overlap=False, **common)
    bg = RunConfig(name, (str(point_store),), (0, 1), eval_overlap=True, **common)
    train(fg, tmp_path / "fg", stop_after=50)
    train(bg, tmp_path / "bg", stop_after=50)
    (a, meta_fg), (b, meta_bg) = _checkpoint(tmp_path / "fg"), _checkpoint(tmp_path / "bg")
    assert meta_fg["step"] == meta_bg["step"] == 40
    assert meta_fg["pending_eval"] is None and [e["step"] for e in meta_fg["history"]["evals"]] == [20, 40]
    assert meta_bg["pending_eval"] == 40 and meta_bg["history"]["evals"] == meta_fg["history"]["evals"][:1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # resumed (either way), both end where an uninterrupted run ends
    res_fg = train(fg, tmp_path / "fg", resume=True)
    res_bg = train(bg, tmp_path / "bg", resume=True)
    whole = train(bg, tmp_path / "whole")
    assert res_fg["seeds"] == res_bg["seeds"] == whole["seeds"]
    _assert_same_run(tmp_path / "fg", tmp_path / "bg")
    _assert_same_run(tmp_path / "fg", tmp_path / "whole")
    lines = _strip(tmp_path / "whole" / "seed_0/metrics.jsonl")
    assert [r["step"] for r in lines if r["kind"] == "eval"] == [20, 40, 60]
    assert lines != sorted(lines, key=lambda r: (r["step"], r["kind"]))  # eval 20 was written after train 30


@pytest.mark.parametrize("crash_at", [25, 45])
def test_a_crash_during_a_background_evaluation_resumes_exactly(crash_at, point_store, tmp_path, monkeypatch):
    # Killed (here: KeyboardInterrupt) while the evaluation of step 20 (or 40) runs in the background: the
    # checkpoint of that step is on disk, and the resumed run evaluates it again.
    cfg = RunConfig("td3bc", (str(point_store),), (0, 1), steps=60, batch_size=32, eval_every=20, eval_episodes=3,
                    log_every=10, overrides=TINY["td3bc"])
    whole = train(cfg, tmp_path / "whole")
    real = StepRunner.__call__

    def crashing(self, step):
        if step == crash_at:
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(StepRunner, "__call__", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut")
    monkeypatch.setattr(StepRunner, "__call__", real)
    meta = _checkpoint(tmp_path / "cut")[1]
    assert meta["step"] == crash_at // 20 * 20 and meta["pending_eval"] == meta["step"]
    resumed = train(cfg, tmp_path / "cut", resume=True)
    assert resumed["seeds"] == whole["seeds"]
    _assert_same_run(tmp_path / "whole", tmp_path / "cut")


@pytest.mark.parametrize("name", list(TINY))
def test_policy_state_is_all_that_act_reads(name):
    agent = make_agent(name, [0, 1])
    agent.register_buffer("obs_mean", torch.tensor([0.5, -0.5]))
    agent.register_buffer("obs_std", torch.tensor([2.0, 3.0]))
    obs = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(0))
    before = agent.act(obs)
    policy = agent.policy_state()
    assert "obs_mean" in policy and all(not k.startswith(("critic", "actor_target")) for k in policy)
    with torch.no_grad():  # everything else may change without changing the actions
        for key, value in agent.state_dict().items():
            if key not in policy and value.is_floating_point():
                value.add_(1.0)
    torch.testing.assert_close(agent.act(obs), before, rtol=0, atol=0)


def test_cpu_policies_act_per_row_as_the_agent_does(point_store, tmp_path):
    from gta_rl.training import CpuPolicies

    train(RunConfig("td3bc", (str(point_store),), (0, 3), steps=20, batch_size=16, eval_episodes=0, log_every=10,
                    overrides=TINY["td3bc"]), tmp_path / "r")
    run, agent, _ = load_run(tmp_path / "r", "cpu")
    policies = CpuPolicies(run)
    policies.load({k: v.numpy() for k, v in agent.policy_state().items()})
    raw = np.random.default_rng(0).uniform(-1, 1, (5, 2)).astype(np.float32)
    rows = np.array([1, 0, 0, 1, 1])
    got = policies(raw, rows)
    x = (torch.from_numpy(raw) - agent.obs_mean) / agent.obs_std
    want = agent.act(x.expand(2, 5, 2))  # every policy on every row
    np.testing.assert_allclose(got, want[torch.as_tensor(rows), torch.arange(5)].numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(want[0].numpy(), want[1].numpy())  # the two seeds act differently


@pytest.mark.parametrize("overlap", [False, True], ids=["foreground", "background"])
def test_worker_rollouts_match_in_process_evaluation(overlap, point_store, tmp_path):
    common = dict(steps=40, batch_size=32, eval_every=20, eval_episodes=3, log_every=20, overrides=TINY["td3bc"])
    here = train(RunConfig("td3bc", (str(point_store),), (0, 1), eval_overlap=False, **common), tmp_path / "here")
    there = train(RunConfig("td3bc", (str(point_store),), (0, 1), eval_async=True, eval_overlap=overlap, **common),
                  tmp_path / "there")
    for seed in ("0", "1"):
        for key in ("final_score", "best_score"):
            # the same policies, their actions computed by another process (rounding may differ)
            assert there["seeds"][seed][key] == pytest.approx(here["seeds"][seed][key], abs=1e-4)
    _assert_same_checkpoint(tmp_path / "here", tmp_path / "there", same_scores=False)


def test_background_evaluation_error_reaches_the_run(point_store, tmp_path, monkeypatch):
    import gta_rl.run_eval as run_eval
    import gta_rl.training as train_mod

    real = run_eval.evaluate_agent
    calls = []

    def flaky(agent, evaluator, run):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("env exploded")
        return real(agent, evaluator, run)

    monkeypatch.setattr(train_mod, "evaluate_agent", flaky)  # the foreground's
    monkeypatch.setattr(run_eval, "evaluate_agent", flaky)  # the background thread's
    cfg = RunConfig("td3bc", (str(point_store),), (0,), steps=40, batch_size=16, eval_every=10, eval_episodes=2,
                    log_every=5, overrides=TINY["td3bc"])
    with pytest.raises(RuntimeError, match="env exploded"):
        train(cfg, tmp_path / "r")
    # the evaluation of step 20 ran in the background and failed; training went on until the error was seen
    lines = _strip(tmp_path / "r" / "seed_0/metrics.jsonl")
    assert [r["step"] for r in lines if r["kind"] == "eval"] == [10]
    assert max(r["step"] for r in lines if r["kind"] == "train") > 20
    meta = _checkpoint(tmp_path / "r")[1]  # written at step 20 while its evaluation was out
    assert meta["step"] == 20 and meta["pending_eval"] == 20 and [e["step"] for e in meta["history"]["evals"]] == [10]
    assert not (tmp_path / "r" / "results.json").exists()


def test_resume_refuses_a_changed_config(point_store, tmp_path):
    cfg = RunConfig("td3bc", (str(point_store),), (0,), steps=10, batch_size=8, eval_episodes=0,
                    log_every=5, overrides=TINY["td3bc"])
    train(cfg, tmp_path / "r")
    changed = RunConfig("td3bc", (str(point_store),), (0,), steps=20, batch_size=16, eval_episodes=0,
                        log_every=5, overrides=TINY["td3bc"])
    with pytest.raises(RunError, match="batch_size"):
        train(changed, tmp_path / "r", resume=True)
    assert (tmp_path / "r" / "results.json").exists()  # a refused resume leaves the finished run as it was
    with pytest.raises(RunError, match="nothing to resume"):
        train(cfg, tmp_path / "empty", resume=True)
    # How a run executes may change on resume (here the matmul precision), what it computes may not.
    fast = RunConfig("td3bc", (str(point_store),), (0,), steps=15, batch_size=8, eval_episodes=0, log_every=5,
                     overrides=TINY["td3bc"], tf32=True)
    assert train(fast, tmp_path / "r", resume=True) is not None
    assert load_checkpoint(tmp_path / "r" / "checkpoint.safetensors")[1]["step"] == 15
    mixed = RunConfig("td3bc", (str(point_store),), (0,), steps=20, batch_size=8, eval_episodes=0, log_every=5,
                      overrides=TINY["td3bc"], bf16=True)
    assert train(mixed, tmp_path / "r", resume=True) is not None
    assert load_run(tmp_path / "r", "cpu")[1].actor.matmul_dtype == torch.bfloat16
    # Episodes left to their default on resume keep the run's recorded number (a run from before the
    # per-env default, or one that chose its own); a different explicit number is refused.
    later = RunConfig("td3bc", (str(point_store),), (0,), steps=25, batch_size=8, log_every=5, overrides=TINY["td3bc"])
    assert train(later, tmp_path / "r", resume=True) is not None
    assert json.loads((tmp_path / "r" / "config.json").read_text())["eval_episodes"] == 0
    with pytest.raises(RunError, match="eval_episodes"):
        train(RunConfig("td3bc", (str(point_store),), (0,), steps=30, batch_size=8, log_every=5, eval_episodes=3,
                        overrides=TINY["td3bc"]), tmp_path / "r", resume=True)


@pytest.mark.parametrize("fullgraph", [False, True], ids=["compile", "fullgraph"])
@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_compile_paths_match_eager(name, fullgraph, bf16, point_store):
    # inductor needs a C++ toolchain and minutes on this CPU; aot_eager traces the same graphs (dynamo +
    # AOTAutograd) and checks the plumbing: `compile` breaks the step's graph at each autograd.grad,
    # `fullgraph` traces those too (fullgraph=True would raise at any break); inductor runs on the GPU below.
    data, _ = load_training_data([point_store])
    eager, compiled = (make_agent(name, [0, 1], BF16 if bf16 else FP32) for _ in range(2))
    run_e = StepRunner(eager, data, 32)
    run_c = StepRunner(compiled, data, 32, compile=True, fullgraph=fullgraph, compile_backend="aot_eager")
    for step in range(4):
        me, mc = run_e(step), run_c(step)
        for key in me:
            torch.testing.assert_close(me[key], mc[key], rtol=1e-5, atol=1e-6)
    for pe, pc in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(pe, pc, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


AUTOTUNE = {"loop_ordering_after_fusion": False, "max_autotune": True, "coordinate_descent_tuning": True}


@pytest.mark.parametrize(("flags", "expected"), [
    ({"compile": True}, {"fullgraph": False, "options": {"loop_ordering_after_fusion": False}}),
    ({"fullgraph": True}, {"fullgraph": True, "options": {"loop_ordering_after_fusion": False}}),
    ({"autotune": True}, {"fullgraph": False, "options": AUTOTUNE}),
    ({"fullgraph": True, "autotune": True}, {"fullgraph": True, "options": AUTOTUNE}),
    ({"compile": True, "compile_backend": "aot_eager"}, {"fullgraph": False, "options": None}),
])
def test_step_runner_compile_options(flags, expected, point_store, monkeypatch):
    # max-autotune must not bring inductor's own CUDA graphs (the runner captures the step itself), and
    # inductor's loop reordering stays off (it asserts on the one-seed CQL / MCQ fullgraph steps on CUDA).
    seen = {}

    def fake_compile(fn, **kwargs):
        seen.update(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    data, _ = load_training_data([point_store])
    StepRunner(make_agent("td3bc", [0]), data, 8, **flags)
    assert {k: seen[k] for k in expected} == expected
    assert seen["dynamic"] is False and "mode" not in seen
    with pytest.raises(ValueError, match="autotune is an inductor mode"):
        StepRunner(make_agent("td3bc", [0]), data, 8, autotune=True, compile_backend="aot_eager")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(TINY))
def test_cuda_graph_matches_eager(name, point_store):
    data, _ = load_training_data([point_store], device="cuda")
    eager = get_spec(name).agent(build_config(name, None, TINY[name]), 2, 2, [0, 1], device="cuda", total_steps=30)
    graph = get_spec(name).agent(build_config(name, None, TINY[name]), 2, 2, [0, 1], device="cuda", total_steps=30)
    run_e, run_g = StepRunner(eager, data, 64), StepRunner(graph, data, 64, cuda_graph=True)
    for step in range(20):
        run_e(step)
        run_g(step)
    torch.cuda.synchronize()
    for pe, pg in zip(eager.parameters(), graph.parameters(), strict=True):
        torch.testing.assert_close(pe, pg, rtol=1e-4, atol=1e-5)


def test_unknown_algorithm_and_settings():
    with pytest.raises(ConfigError, match="unknown algorithm"):
        get_spec("sac-n")
    with pytest.raises(ConfigError, match="no setting"):
        build_config("iql", None, {"not_a_field": 1})
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config("iql", "walker-expert-plus", {})
    assert build_config("iql", "hopper-medium-expert", {}).beta == 6.0


def test_presets_match_dataset_names():
    from gta_rl.algorithms import match_preset

    assert match_preset("iql", "mujoco/hopper/medium-expert-v0") == "hopper-medium-expert"
    assert match_preset("iql", "hopper_medium_replay.zarr") == "hopper-medium-replay"
    assert match_preset("iql", "D4RL/antmaze/umaze-v1") == "antmaze"
    assert match_preset("cql", "D4RL/pointmaze/large-v2 PointMaze_Large-v3") == "maze2d" or \
        match_preset("cql", "D4RL/pointmaze/large-v2 PointMaze_Large-v3") == "pointmaze"
    assert match_preset("td3bc", "halfcheetah-medium") is None
    # CORL configs/offline/cql/antmaze/umaze_v2.yaml (the settings gta-rl's CQL has)
    cql = build_config("cql", match_preset("cql", "D4RL/antmaze/umaze-v1"), {})
    assert (cql.reward_scale, cql.reward_bias, cql.lagrange, cql.target_action_gap, cql.cql_alpha, cql.clip_diff_min,
            cql.critic_hidden, cql.policy_lr) == (10.0, -5.0, True, 0.8, 5.0, -200.0, (256,) * 5, 1e-4)


@pytest.mark.parametrize("dataset, normalize, beta, expectile, deterministic", [
    # CORL configs/offline/iql/<env>/<dataset>.yaml: normalize_reward, beta, iql_tau, iql_deterministic
    ("halfcheetah-medium-v2", False, 3.0, 0.7, False),
    ("mujoco/halfcheetah/medium-expert-v0", False, 3.0, 0.7, False),
    ("walker2d-medium-replay.zarr", False, 3.0, 0.7, False),
    ("hopper-medium-expert-v2", False, 6.0, 0.5, False),
    ("hopper-expert-v2", False, 3.0, 0.7, False),
    ("hopper-medium-v2", True, 3.0, 0.7, True),
    ("hopper_medium_replay.zarr", True, 3.0, 0.7, True),
])
def test_iql_presets_are_corl_configs(dataset, normalize, beta, expectile, deterministic):
    from gta_rl.algorithms import match_preset

    cfg = build_config("iql", match_preset("iql", dataset), {})
    assert (cfg.normalize_reward, cfg.beta, cfg.expectile, cfg.deterministic_actor) == \
        (normalize, beta, expectile, deterministic)


runner = CliRunner()


def test_cli_train_evaluate_summary(point_store, tmp_path):
    args = ["train", "td3bc", "--data", str(point_store), "--data", str(point_store), "--seeds", "0-1",
            "--steps", "40", "--batch-size", "16", "--eval-every", "20", "--eval-episodes", "3",
            "--log-every", "20", "--set", "hidden=[16,16]", "--mix-ratio", "0.5"]
    res = runner.invoke(app, [*args, "--bf16", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "seed 1: final" in res.output
    res = runner.invoke(app, [*args[:-2], "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["algorithm_config"]["hidden"] == [16, 16] and cfg["mix_ratio"] == 0.5 and cfg["seeds"] == [0, 1]
    assert cfg["bf16"] is True and json.loads((tmp_path / "b" / "config.json").read_text())["bf16"] is False
    res = runner.invoke(app, ["evaluate", str(tmp_path / "a"), "--episodes", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "seed 0: step 40" in res.output
    # evaluate reproduces the run's last evaluation, in the way the run evaluated (here in env workers)
    res = runner.invoke(app, [*args[:-2], "--eval-async", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    final = json.loads((tmp_path / "c" / "results.json").read_text())["seeds"]
    for flags in ([], ["--in-process"]):
        res = runner.invoke(app, ["evaluate", str(tmp_path / "c"), "--episodes", "3", "--device", "cpu", *flags])
        assert res.exit_code == 0, res.output
        printed = [float(line.rsplit("score ", 1)[1]) for line in res.output.splitlines() if " score " in line]
        assert printed == pytest.approx([final[s]["final_score"] for s in ("0", "1")], abs=5e-3 if not flags else 0.1)
    res = runner.invoke(app, ["summary", str(tmp_path / "a"), str(tmp_path / "b"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["average"]["seeds"] == [0, 1] and np.isfinite(doc["average"]["mean"])
    res = runner.invoke(app, ["summary", str(tmp_path / "a"), str(tmp_path / "b")])
    assert res.exit_code == 0 and "average (F.2)" in res.output and "+-" in res.output
    run, agent, meta = load_run(tmp_path / "a", "cpu")
    assert meta["step"] == 40 and agent.num_seeds == 2 and agent.critic.matmul_dtype == torch.bfloat16
    assert load_run(tmp_path / "b", "cpu")[1].critic.matmul_dtype is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["sac", "--seeds", "0"], "unknown algorithm"),
        (["td3bc", "--seeds", "3-1"], "runs backwards"),
        (["td3bc", "--seeds", "x"], "bad seed list"),
        (["td3bc", "--set", "nope=1"], "no setting"),
    ],
)
def test_cli_bad_input_is_one_line(extra, message, point_store, tmp_path):
    algo, *rest = extra
    res = runner.invoke(app, ["train", algo, "--data", str(point_store), "--out", str(tmp_path / "x"), *rest])
    assert res.exit_code == 1
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "checkpoint.safetensors").exists()


def _started_then_one_error_line(output: str) -> bool:
    """A failure once training has started: the run directory line, the resolved config (two lines), then the
    error in one line."""
    lines = output.strip().splitlines()
    return (len(lines) == 4 and lines[0].startswith("run directory: ") and lines[2].startswith("settings: ")
            and lines[3].startswith("error: "))


def test_cli_compile_failure_is_one_line_and_the_out_dir_is_reusable(point_store, tmp_path, monkeypatch):
    # An inductor failure (seen on an H100 for CQL's one-seed fullgraph step) must not print pages, and the
    # failed run must leave nothing that a later run of the same --out would take for a checkpoint.
    import gta_rl.training as train_module

    class FailingRunner(StepRunner):
        def __call__(self, step):
            if self.fn != self.agent.train_step:  # compiled
                raise torch._inductor.exc.InductorError(AssertionError("scheduler fusion"), None)
            return super().__call__(step)

    monkeypatch.setattr(train_module, "StepRunner", FailingRunner)
    args = ["train", "td3bc", "--data", str(point_store), "--out", str(tmp_path / "x"), "--steps", "4",
            "--batch-size", "8", "--eval-episodes", "0", "--log-every", "2", "--set", "hidden=[8,8]"]
    res = runner.invoke(app, [*args, "--fullgraph"])
    assert res.exit_code == 1, res.output
    assert _started_then_one_error_line(res.output) and "torch.compile failed" in res.output
    assert "AssertionError: scheduler fusion" in res.output  # the wrapped failure, not the wrapper's banner
    assert "without --fullgraph" in res.output and not (tmp_path / "x" / "checkpoint.safetensors").exists()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    # A resumed run that fails to compile keeps its checkpoint and says so.
    ckpt = (tmp_path / "x" / "checkpoint.safetensors").read_bytes()
    res = runner.invoke(app, [*args[:7], "8", *args[8:], "--resume", "--fullgraph"])
    assert res.exit_code == 1 and "--resume without --fullgraph" in res.output, res.output
    assert (tmp_path / "x" / "checkpoint.safetensors").read_bytes() == ckpt
    res = runner.invoke(app, [*args[:7], "8", *args[8:], "--resume"])
    assert res.exit_code == 0, res.output


def test_compile_failure_message_unwraps_and_names_the_flag(tmp_path):
    from gta_rl.cli import _compile_failure

    def fn():
        pass

    banner = torch._dynamo.exc.BackendCompilerFailed(fn, AssertionError("loop reordering\ndetails"), None)
    assert str(banner).splitlines()[0].startswith("backend=")  # the wrapper's own first line is a banner
    msg = _compile_failure(banner, tmp_path, fullgraph=False)
    assert msg.startswith("torch.compile failed (AssertionError: loop reordering); run again without --compile (")
    assert "fullgraph" not in msg
    grad = RuntimeError("Function CompiledFunctionBackward returned an invalid gradient at index 13")
    (tmp_path / "checkpoint.safetensors").write_bytes(b"")
    msg = _compile_failure(grad, tmp_path, fullgraph=True)
    assert "(RuntimeError: Function CompiledFunctionBackward" in msg
    assert msg.endswith("continue with --resume without --fullgraph (or without --compile); the checkpoint is intact")


def test_cli_runtime_error_of_a_compiled_step_is_one_line(point_store, tmp_path, monkeypatch):
    import gta_rl.training as train_module

    class FailingRunner(StepRunner):
        def __call__(self, step):
            if self.fn != self.agent.train_step:
                raise RuntimeError("Function CompiledFunctionBackward returned an invalid gradient at index 13")
            raise RuntimeError("an ordinary bug")

    monkeypatch.setattr(train_module, "StepRunner", FailingRunner)
    args = ["train", "td3bc", "--data", str(point_store), "--steps", "4", "--batch-size", "8",
            "--eval-episodes", "0", "--set", "hidden=[8,8]"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a"), "--compile"])
    assert res.exit_code == 1 and _started_then_one_error_line(res.output), res.output
    assert "torch.compile failed (RuntimeError: Function CompiledFunctionBackward" in res.output
    assert "run again without --compile (" in res.output
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])  # not compiled: not a compile failure
    assert isinstance(res.exception, RuntimeError) and "ordinary bug" in str(res.exception)


def test_cli_stores_of_different_envs(point_store, tmp_path):
    from gta_rl.toy import write_point_dataset

    other = write_point_dataset(tmp_path / "o.zarr", episodes=3, env_id="OtherPoint-v0").path
    res = runner.invoke(app, ["train", "td3bc", "--data", str(point_store), "--data", str(other),
                              "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "disagree in env" in res.output
    with pytest.raises(StoreError):
        load_training_data([point_store, other])
    res = runner.invoke(app, ["evaluate", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "not a gta-rl run directory" in res.output


def test_pointmaze_dict_observations_are_flattened():
    from gta_rl.evaluation import Evaluator, flatten_observation

    layout = [{"key": "observation", "start": 0, "stop": 4}, {"key": "desired_goal", "start": 4, "stop": 6}]
    obs = {"observation": np.arange(8.0).reshape(2, 4), "desired_goal": np.array([[9.0, 8.0], [7.0, 6.0]]),
           "achieved_goal": np.zeros((2, 2))}
    np.testing.assert_array_equal(flatten_observation(obs, layout, 2)[1], [4, 5, 6, 7, 7, 6])
    with pytest.raises(ValueError, match="observation_layout"):
        flatten_observation(obs, None, 2)
    ev = Evaluator("PointMaze_UMaze-v3", 1, 2, layout=layout,
                   env_kwargs={"continuing_task": True, "reset_target": False, "max_episode_steps": 20})
    seen = []
    returns = ev.run(lambda o: seen.append(o.shape) or np.zeros((1, 2, 2)))
    ev.close()
    assert seen[0] == (1, 2, 6) and len(seen) == 20 and returns.shape == (1, 2)
    # the same through worker processes, which flatten the dict observations themselves
    sharded = Evaluator("PointMaze_UMaze-v3", 1, 2, layout=layout, asynchronous=True, workers=2,
                        env_kwargs={"continuing_task": True, "reset_target": False, "max_episode_steps": 20})
    seen_sharded = []
    again = sharded.run(lambda o: seen_sharded.append(o.copy()) or np.zeros((1, 2, 2)))
    sharded.close()
    np.testing.assert_array_equal(again, returns)
    assert seen_sharded[0].shape == (1, 2, 6)


class _ScaledExpert:
    """Policy row j acts scale[j] x the toy expert (a policy factory for worker processes)."""

    def load(self, state):
        self.scale = np.asarray(state["scale"])

    def __call__(self, obs, rows):
        from gta_rl import toy

        return self.scale[rows, None] * toy.expert_action(obs)


@pytest.mark.parametrize("workers", [1, 4])
def test_worker_rollouts_equal_per_step_evaluation(workers):
    from gta_rl import toy
    from gta_rl.evaluation import Evaluator

    scale = np.array([0.3, 0.9])
    plain = Evaluator(toy.ENV_ID, 2, 3, seed_base=5)
    want = plain.run(lambda o: scale[:, None, None] * toy.expert_action(o))
    plain.close()
    ev = Evaluator(toy.ENV_ID, 2, 3, seed_base=5, asynchronous=True, workers=workers, policy_factory=_ScaledExpert)
    np.testing.assert_array_equal(ev.rollout({"scale": scale}), want)  # 6 copies over 4 workers: rows 0,0 | 0,1 | 1 | 1
    np.testing.assert_array_equal(ev.rollout({"scale": scale[::-1].copy()}), want[::-1])  # reloaded each time
    ev.close()
    assert not np.allclose(want[0], want[1])
    with pytest.raises(ValueError, match="asynchronous=True"):
        Evaluator(toy.ENV_ID, 2, 3, policy_factory=_ScaledExpert)


def test_sharded_env_worker_errors_are_one_line():
    from gta_rl import toy
    from gta_rl.evaluation import ShardedVectorEnv

    envs = ShardedVectorEnv(toy.ENV_ID, 3, 2)
    obs, _ = envs.reset(seed=[0, 1, 2])
    assert obs.shape == (3, 2) and obs.dtype == np.float32
    with pytest.raises(RuntimeError, match="evaluation env worker failed: .*Error"):
        envs.step(np.zeros((3, 5)))  # wrong action width
    with pytest.raises(RuntimeError, match="cannot be used any more"):
        envs.step(np.zeros((3, 2)))
    envs.close()
    assert envs.procs == []
    # a worker killed from outside: a one-line error, not a BrokenPipeError, and close() still works
    import os
    import signal

    envs = ShardedVectorEnv(toy.ENV_ID, 3, 2)
    envs.reset(seed=[0, 1, 2])
    os.kill(envs.procs[1].pid, signal.SIGKILL)
    envs.procs[1].join(timeout=10)
    with pytest.raises(RuntimeError, match="evaluation env worker failed: the worker process died"):
        for _ in range(3):  # the first send may still be buffered by the pipe
            envs.step(np.zeros((3, 2)))
    envs.close()
    with pytest.raises(ValueError, match="workers must be >= 1"):
        ShardedVectorEnv(toy.ENV_ID, 3, 0)


def test_fullgraph_is_not_for_dt(point_store, tmp_path):
    cfg = RunConfig("dt", (str(point_store),), (0,), steps=2, batch_size=4, eval_episodes=0, fullgraph=True)
    with pytest.raises(RunError, match="--fullgraph is for the Q-learning algorithms"):
        train(cfg, tmp_path / "dt")
    assert not (tmp_path / "dt").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fullgraph", [False, True], ids=["compile", "fullgraph"])
def test_inductor_compile_and_graph_match_eager_on_gpu(point_store, fullgraph):
    data, _ = load_training_data([point_store], device="cuda")
    make = lambda: get_spec("td3bc").agent(build_config("td3bc", None, TINY["td3bc"]), 2, 2, [0, 1],  # noqa: E731
                                           device="cuda", total_steps=30)
    eager, fast = make(), make()
    run_e, run_f = StepRunner(eager, data, 64), StepRunner(fast, data, 64, compile=True, cuda_graph=True,
                                                           fullgraph=fullgraph)
    for step in range(12):
        run_e(step)
        run_f(step)
    torch.cuda.synchronize()
    for pe, pf in zip(eager.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(pe, pf, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_background_evaluation_on_gpu_equals_foreground(point_store, tmp_path):
    # On CUDA the evaluation thread runs on its own stream while the graphs replay on the training stream;
    # the first evaluations (steps 5) come before both graphs are captured and run in the foreground.
    common = dict(steps=60, batch_size=64, eval_every=5, eval_episodes=4, log_every=10, cuda_graph=True,
                  overrides=TINY["td3bc"], device="cuda")
    fg = train(RunConfig("td3bc", (str(point_store),), (0, 1), eval_overlap=False, **common), tmp_path / "fg")
    bg = train(RunConfig("td3bc", (str(point_store),), (0, 1), eval_overlap=True, **common), tmp_path / "bg")
    assert fg["seeds"] == bg["seeds"]
    _assert_same_checkpoint(tmp_path / "fg", tmp_path / "bg")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["cql", "mcq"])
def test_one_seed_fullgraph_compiles_with_inductor_on_gpu(name, halfcheetah_sized_data):
    # At HalfCheetah's sizes (obs 17, act 6, 256-wide nets, batch 1024), torch 2.11's inductor failed an
    # assertion in loop reordering while fusing these steps (inductor_options turns it off).
    data = halfcheetah_sized_data
    make = lambda: get_spec(name).agent(build_config(name, None, {}), 17, 6, [0], device="cuda",  # noqa: E731
                                        total_steps=1000)
    eager, fast = make(), make()
    torch._dynamo.reset()  # no cache entries of earlier tests' train_step (the same code object)
    try:
        run_e, run_f = StepRunner(eager, data, 1024), StepRunner(fast, data, 1024, cuda_graph=True, fullgraph=True)
        for step in range(6):
            run_e(step)
            out = run_f(step)
        torch.cuda.synchronize()
        assert all(bool(torch.isfinite(v).all()) for v in out.values())
        for pe, pf in zip(eager.parameters(), fast.parameters(), strict=True):
            torch.testing.assert_close(pe, pf, rtol=1e-3, atol=1e-4)
    finally:
        torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["td3bc", "cql", "mcq"])
def test_bf16_fullgraph_matches_eager_bf16_on_gpu(name, halfcheetah_sized_data):
    # --bf16 --fullgraph --cuda-graph at HalfCheetah's sizes (the padded 17- and 23-wide first layers, the
    # fused fp32 heads) against the eager bf16 step; bf16 rounding differs between the two kernel sets.
    data = halfcheetah_sized_data

    def make():
        return get_spec(name).agent(build_config(name, None, {}), 17, 6, [0, 1], device="cuda", total_steps=1000,
                                    arithmetic=BF16)

    eager, fast = make(), make()
    start = [p.detach().clone() for p in eager.parameters()]
    torch._dynamo.reset()
    try:
        run_e, run_f = StepRunner(eager, data, 1024), StepRunner(fast, data, 1024, cuda_graph=True, fullgraph=True)
        for step in range(6):
            me = {k: v.clone() for k, v in run_e(step).items()}
            mf = run_f(step)
            # The same batches: the losses agree to bf16 precision (every metric on the first step, before
            # the two runs' parameters drift apart by rounding; the critic loss at every step).
            for key in me if step == 0 else ["critic_loss"]:
                torch.testing.assert_close(mf[key], me[key], rtol=2e-2, atol=1e-2)
        torch.cuda.synchronize()
        assert all(bool(torch.isfinite(v).all()) for v in mf.values())
        for p0, pe, pf in zip(start, eager.parameters(), fast.parameters(), strict=True):
            # Each update moves a weight by at most ~lr: compare the moves, not the weights (CQL's Lagrange
            # multiplier is unused with its defaults and stays put in both runs).
            moved = (pe - p0).norm()
            assert (pf - pe).norm() <= 0.25 * moved or torch.equal(pf, p0) and torch.equal(pe, p0), (
                float(moved), float((pf - pe).norm()))
    finally:
        torch._dynamo.reset()


def test_unknown_env_fails_before_writing(tmp_path):
    from gta_rl.toy import write_point_dataset

    store = write_point_dataset(tmp_path / "u.zarr", episodes=3, env_id="NoSuchEnv-v0").path
    with pytest.raises(ValueError, match="not registered"):
        train(RunConfig("td3bc", (str(store),), (0,), steps=5, batch_size=4, overrides=TINY["td3bc"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # without evaluation the run trains on the data alone (max_action from the data)
    train(RunConfig("td3bc", (str(store),), (0,), steps=5, batch_size=4, eval_episodes=0, log_every=5,
                    overrides=TINY["td3bc"]), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["max_action"] == 1.0


def test_store_that_does_not_fit_its_env_fails_before_training(tmp_path):
    # A PointMaze store re-imported without its observation_layout and env_kwargs used to train for minutes
    # and fail at the first evaluation.
    pytest.importorskip("gymnasium_robotics")
    from gta_data import write_store
    from gta_data.store import Transitions
    from gta_rl.evaluation import check_env_matches

    layout = [{"key": "observation", "start": 0, "stop": 4}, {"key": "desired_goal", "start": 4, "stop": 6}]
    kwargs = {"continuing_task": True, "reset_target": False, "max_episode_steps": 20}
    check_env_matches("PointMaze_UMaze-v3", kwargs, layout, 6)
    with pytest.raises(ValueError, match="no observation_layout"):
        check_env_matches("PointMaze_UMaze-v3", kwargs, None, 6)
    with pytest.raises(ValueError, match="width 6 but the store's rows have obs_dim 8"):
        check_env_matches("PointMaze_UMaze-v3", kwargs, layout, 8)
    with pytest.raises(ValueError, match="does not observe"):
        check_env_matches("PointMaze_UMaze-v3", kwargs, [{"key": "goal", "start": 0, "stop": 6}], 6)
    with pytest.raises(ValueError, match="env_kwargs"):
        check_env_matches("PointMaze_UMaze-v3", {"no_such_option": 1}, layout, 6)
    with pytest.raises(ValueError, match="flatten to width 17 but the store's rows have obs_dim 2"):
        check_env_matches("HalfCheetah-v5", None, None, 2)

    rng = np.random.default_rng(0)
    n = 40
    obs = rng.normal(size=(n, 6)).astype(np.float32)
    data = Transitions(obs, rng.uniform(-1, 1, (n, 2)), rng.normal(size=n), obs, np.zeros(n, bool),
                       np.r_[np.zeros(n - 1, bool), True])
    store = write_store(tmp_path / "pm.zarr", data, np.array([n]), env_id="PointMaze_UMaze-v3")  # no layout
    with pytest.raises(ValueError, match="no observation_layout"):
        train(RunConfig("td3bc", (str(store.path),), (0,), steps=5, batch_size=4, overrides=TINY["td3bc"]),
              tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_async_evaluation_matches_sync():
    from gta_rl import toy
    from gta_rl.evaluation import Evaluator

    out = []
    for asynchronous, workers in ((False, None), (True, None), (True, 1), (True, 4)):  # 6 copies on 4 workers: 2,2,1,1
        ev = Evaluator(toy.ENV_ID, 2, 3, seed_base=5, asynchronous=asynchronous, workers=workers)
        out.append(ev.run(lambda o: 0.5 * toy.expert_action(o)))
        ev.close()
    for other in out[1:]:
        np.testing.assert_array_equal(out[0], other)
    assert np.allclose(out[0][0], out[0][1])  # same start states for every policy
    assert len(set(np.round(out[0][0], 6))) == 3  # episodes differ


def test_evaluation_episodes_default_to_100_for_mazes(point_store, tmp_path):
    from gta_rl.training import default_eval_episodes

    assert [default_eval_episodes(e) for e in ("PointMaze_UMaze-v3", "AntMaze_Medium-v5", "maze2d-large-v1",
                                               "HalfCheetah-v5", "Hopper-v5")] == [100, 100, 100, 10, 10]
    # The number is decided from the store's env and recorded (the toy task is no maze: 10).
    train(RunConfig("td3bc", (str(point_store),), (0,), steps=2, batch_size=8, eval_every=0,
                    overrides=TINY["td3bc"]), tmp_path / "run")
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "maze" not in run["env_id"].lower() and run["eval_episodes"] == 10


def test_out_must_be_a_new_or_own_run_directory(point_store, tmp_path):
    cfg = RunConfig("td3bc", (str(point_store),), (0,), steps=4, batch_size=8, eval_episodes=0, log_every=2,
                    overrides=TINY["td3bc"])
    # Someone else's directory (e.g. a diffusion model run) is never written into.
    other = tmp_path / "model"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"train": {}, "edm": {}}))
    with pytest.raises(RunError, match="holds no gta-rl run"):
        train(cfg, other)
    assert json.loads((other / "config.json").read_text()) == {"train": {}, "edm": {}}
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(RunError, match="is a file"):
        train(cfg, afile)
    # A run stopped before its first checkpoint starts again (its logs are not appended to).
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"algorithm": "td3bc", "seeds": [0], "data": [str(point_store)]}))
    (run / "seed_0").mkdir()
    (run / "seed_0" / "metrics.jsonl").write_text(json.dumps({"step": 99, "kind": "train"}) + "\n")
    with pytest.raises(RunError, match="without --resume a run that never reached"):
        train(cfg, run, resume=True)
    train(cfg, run)
    steps = [json.loads(x)["step"] for x in (run / "seed_0" / "metrics.jsonl").read_text().splitlines()]
    assert 99 not in steps and steps == sorted(steps)
    # A finished run whose checkpoint was removed is not started again over its results.
    (run / "checkpoint.safetensors").unlink()
    with pytest.raises(RunError, match="finished run"):
        train(cfg, run)


def test_settings_of_the_wrong_type_fail_before_training(point_store, tmp_path):
    for overrides, message in (({"alpha": "abc"}, "alpha='abc' is not a number"),
                               ({"policy_freq": 2.5}, "policy_freq=2.5 is not an integer"),
                               ({"hidden": [64, 0]}, "not a list of positive integers"),
                               ({"normalize_reward": 1}, "is not true or false")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            train(RunConfig("td3bc", (str(point_store),), (0,), steps=4, batch_size=8, overrides=overrides),
                  tmp_path / "r")
        assert not (tmp_path / "r").exists()
    assert build_config("td3bc", None, {"alpha": 2}).alpha == 2.0 and isinstance(build_config("td3bc", None, {"alpha": 2}).alpha, float)
    # settings whose meaning has a range: out-of-range values are one-line errors before training too
    for algo, overrides, message in (("td3bc", {"actor_lr": -3e-4}, "actor_lr=-0.0003 is not a learning rate >= 0"),
                                     ("td3bc", {"discount": 1.5}, "discount=1.5 is not in [0, 1]"),
                                     ("td3bc", {"tau": 0}, "tau=0.0 is not in (0, 1]"),
                                     ("td3bc", {"policy_freq": 0}, "policy_freq=0 is not a positive integer"),
                                     ("iql", {"expectile": 1.0}, "expectile=1.0 is not in (0, 1)"),
                                     ("cql", {"n_actions": 0}, "n_actions=0 is not a positive integer"),
                                     ("dt", {"attention_dropout": 1.0}, "is not a dropout probability in [0, 1)")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            build_config(algo, None, overrides)
    with pytest.raises(ConfigError, match="is not a learning rate >= 0"):
        train(RunConfig("td3bc", (str(point_store),), (0,), steps=4, batch_size=8, overrides={"critic_lr": -1}),
              tmp_path / "r")
    assert not (tmp_path / "r").exists()
    assert build_config("td3bc", None, {"discount": 0.0, "actor_lr": 0.0}).discount == 0.0  # one-step target, frozen
    # A run saved before the range checks with a value they refuse still evaluates and resumes.
    cfg = RunConfig("td3bc", (str(point_store),), (0,), steps=4, batch_size=8, eval_episodes=0, log_every=2,
                    checkpoint_every=2, overrides=TINY["td3bc"])
    train(cfg, tmp_path / "old", stop_after=2)
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    saved["algorithm_config"]["tau"] = 0.0
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    train(replace(cfg, overrides={}), tmp_path / "old", resume=True)
    assert json.loads((tmp_path / "old" / "config.json").read_text())["algorithm_config"]["tau"] == 0.0
    assert build_config("td3bc", None, {"reward_bias": -1.0}).reward_bias == -1.0  # no range: biases may be negative
    for algo in ("td3bc", "iql", "cql", "mcq", "dt"):  # every preset is in range
        for preset in [None, *get_spec(algo).presets]:
            build_config(algo, preset, {})
    with pytest.raises(RunError, match="unknown device 'nosuch'"):
        train(RunConfig("td3bc", (str(point_store),), (0,), steps=4, batch_size=8, device="nosuch"), tmp_path / "d")
    with pytest.raises(RunError, match="checkpoint_every must be >= 0"):
        train(RunConfig("td3bc", (str(point_store),), (0,), steps=4, batch_size=8, checkpoint_every=-1), tmp_path / "c")


def test_resume_keeps_the_settings_the_run_started_with(point_store, tmp_path):
    # A run started before a preset changed (emulated by editing its recorded settings) resumes with them.
    cfg = RunConfig("td3bc", (str(point_store),), (0,), steps=8, batch_size=8, eval_episodes=0, log_every=2,
                    checkpoint_every=4, overrides=TINY["td3bc"])
    train(cfg, tmp_path / "r", stop_after=4)
    path = tmp_path / "r" / "config.json"
    run = json.loads(path.read_text())
    run["algorithm_config"]["alpha"] = 3.5
    path.write_text(json.dumps(run))
    plain = RunConfig("td3bc", (str(point_store),), (0,), steps=8, batch_size=8, eval_episodes=0, log_every=2,
                      checkpoint_every=4)  # no --preset / --set: the recorded ones
    train(plain, tmp_path / "r", resume=True)
    assert json.loads(path.read_text())["algorithm_config"]["alpha"] == 3.5
    assert load_run(tmp_path / "r", "cpu")[1].config.alpha == 3.5
