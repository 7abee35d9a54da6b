"""tools/sweep.py and tools/stage_scheduler.py: a sweep of two rows end to end, GPU slot pinning, resume, one-line
errors of failed stages, the stop of a time-limited call, and the Ray backend (skipped without ray).

The sweeps here run stand-in stages (a Python one-liner each, with a row's shape: data, a model, augmented
stores, RL, a comparison) so that they take seconds; tests/test_reproduce.py runs the real stages of a row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
try:
    import reproduce
    import stage_scheduler
    import sweep
    from stage_scheduler import Graph, Limits, Stage, run_graphs
finally:
    sys.path.remove(str(ROOT / "tools"))

# A stand-in stage: checks its inputs exist, records what it saw (CUDA_VISIBLE_DEVICES, start and end times),
# then writes its output. argv: out, seconds, exit status, inputs...
STAND_IN = """
import json, os, sys, time
out, seconds, code, *inputs = sys.argv[1:]
t0 = time.time()
with open(out + ".pid", "w") as f:
    f.write(str(os.getpid()))
missing = [p for p in inputs if not os.path.exists(p)]
if missing:
    sys.exit(f"missing input {missing}")
time.sleep(float(seconds))
if int(code):
    print("a line before")
    print(f"ValueError: bad input in {out}")
    sys.exit(int(code))
record = {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": t0, "end": time.time(), "inputs": inputs}
with open(out + ".tmp", "w") as f:
    json.dump(record, f)
os.replace(out + ".tmp", out)
"""


def stand_in(name, needs, w: Path, gpu=False, seconds=0.05, code=0, inputs=None):
    inputs = [str(w / f"{n}.json") for n in needs] if inputs is None else inputs
    return Stage(name, tuple(needs), [sys.executable, "-c", STAND_IN, str(w / f"{name}.json"), str(seconds),
                                      str(code), *inputs], gpu=gpu)


def row_stages(dataset, w: Path, scale, gpu, fail: str | None = None):
    """A row's shape: data (CPU), two models and their stores (GPU), s4rl (CPU), rl (GPU), compare (CPU)."""
    shape = [("data", (), False), ("gta-model", ("data",), True), ("gta", ("gta-model",), True),
             ("s4rl", ("data",), False), ("synther-model", ("data",), True), ("synther", ("synther-model",), True),
             ("rl", ("data", "gta", "s4rl", "synther"), True), ("compare", ("rl",), False)]
    return [stand_in(n, needs, w, gpu=g and gpu, code=int(n == fail)) for n, needs, g in shape]


def finish(row):
    """A row's report from the stand-ins' outputs (the real sweep: reproduce.write_row)."""
    compare = json.loads((row.workdir / "compare.json").read_text())
    scores = {m: {"mean": float(i), "std": 0.5, "seeds": 2} for i, m in enumerate(reproduce.METHODS)}
    (row.workdir / "row.json").write_text(json.dumps({"dataset": row.dataset, "compare": compare}))
    return {"dataset": row.dataset, "scores": scores, "paper": reproduce.PAPER.get(row.dataset)}


def _run_sweep(rows, root, limits, executor=None, build=row_stages, **kw):
    return sweep.run_sweep(rows, root, True, limits, executor, build=build, finish=finish, poll_s=0.05, **kw)


def test_two_rows_end_to_end_then_a_rerun_that_does_nothing(tmp_path, capsys):
    rows = sweep.plan(["pointmaze-umaze", "hopper-medium"], tmp_path, tiny=True)
    summary, outcome = _run_sweep(rows, tmp_path, Limits(gpus=("0", "1"), cpu_jobs=2))
    assert outcome.ok and not outcome.blocked
    assert [r["status"] for r in summary["rows"]] == ["done", "done"]
    for row in rows:
        assert row.workdir == tmp_path / row.dataset
        ledger = json.loads((row.workdir / "stages.json").read_text())
        assert set(ledger) == {s.name for s in row_stages(row.dataset, row.workdir, row.scale, True)}
        assert all(v["wall_s"] > 0 for v in ledger.values())
        rl = json.loads((row.workdir / "rl.json").read_text())  # each row read its own stores
        assert rl["inputs"] == [str(row.workdir / f"{n}.json") for n in ("data", "gta", "s4rl", "synther")]
        assert json.loads((row.workdir / "row.json").read_text())["dataset"] == row.dataset
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["label"] for r in saved["rows"]] == ["pointmaze-umaze", "hopper-medium"]
    assert saved["calls"][0]["rows_done"] == 2 and saved["calls"][0]["gpus"] == ["0", "1"]
    md = (tmp_path / "sweep.md").read_text()
    assert "| pointmaze-umaze | 0.00 +- 0.50 | 1.00 +- 0.50 | 2.00 +- 0.50 | 3.00 +- 0.50 | 41.68 +- 1.41 | 8/8 |" in md
    out = capsys.readouterr().out
    assert out.count(": start") == 16 and "pointmaze-umaze/gta-model: start on GPU" in out

    outputs = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.json") if p.parent != tmp_path}
    summary, outcome = _run_sweep(rows, tmp_path, Limits(gpus=("0", "1"), cpu_jobs=2))
    out = capsys.readouterr().out
    assert outcome.ok and ": start" not in out and out.count("done earlier") == 16
    assert len(summary["calls"]) == 2 and [r["status"] for r in summary["rows"]] == ["done", "done"]
    # the stand-ins' outputs and the ledgers are as the first call left them; only the rows' reports are rewritten
    assert {p: p.stat().st_mtime_ns for p in outputs if p.name != "row.json"} == {
        p: t for p, t in outputs.items() if p.name != "row.json"}


def test_a_row_of_the_sweep_is_the_row_reproduce_makes_alone(tmp_path):
    rows = sweep.plan(["table1"], tmp_path, tiny=False, given={"rl_steps": 1000},
                      variants=["base", "long:diffusion-steps=200000:seeds=0-3"])
    assert len(rows) == 2 * len(reproduce.PAPER)
    long_hopper = next(r for r in rows if r.label == "long/hopper-medium")
    assert long_hopper.workdir == tmp_path / "long" / "hopper-medium"
    assert (long_hopper.scale.diffusion_steps, long_hopper.scale.seeds, long_hopper.scale.rl_steps) == (200000, "0-3", 1000)
    base = next(r for r in rows if r.label == "base/hopper-medium")
    assert base.scale == reproduce.scale_from(False, {"rl_steps": 1000})
    # the same stages, commands and GPU marks as reproduce.py's in that workdir
    mine = reproduce.build_stages(base.dataset, base.workdir, base.scale, True)
    theirs = reproduce.build_stages("hopper-medium", tmp_path / "base" / "hopper-medium",
                                    reproduce.scale_from(False, {"rl_steps": 1000}), True)
    assert [(s.name, s.command, s.gpu) for s in mine] == [(s.name, s.command, s.gpu) for s in theirs]
    marks = {s.name: s.gpu for s in mine}
    assert not marks["data"] and not marks["s4rl"] and not marks["compare"]
    assert marks["gta-model"] and marks["rl"] and marks["quality-gta"]
    assert not any(s.gpu for s in reproduce.build_stages("hopper-medium", tmp_path, base.scale, False))
    with pytest.raises(ValueError, match="OPTION=VALUE"):
        sweep.plan(["hopper-medium"], tmp_path, variants=["x:steps=3"])
    with pytest.raises(ValueError, match="takes a int"):
        sweep.plan(["hopper-medium"], tmp_path, variants=["x:rl-steps=many"])
    with pytest.raises(ValueError, match="no Table 1 row"):
        sweep.plan(["ant-medium"], tmp_path)


def test_gpu_stages_are_pinned_to_their_slot_and_cpu_stages_see_no_gpu(tmp_path):
    graphs = []
    for g in range(2):
        w = tmp_path / f"g{g}"
        stages = [stand_in("data", (), w)]
        stages += [stand_in(f"train{i}", ("data",), w, gpu=True, seconds=0.4) for i in range(5)]
        stages += [stand_in(f"cpu{i}", ("data",), w, seconds=0.4) for i in range(3)]
        graphs.append(Graph(w, stages, f"g{g}"))
    outcome = run_graphs(graphs, Limits(gpus=("3", "5"), per_gpu=2, cpu_jobs=2), poll_s=0.02)
    assert outcome.ok
    records = {(g.label, s.name): json.loads((g.workdir / f"{s.name}.json").read_text())
               for g in graphs for s in g.stages}
    gpu = {k: r for k, r in records.items() if k[1].startswith("train")}
    cpu = {k: r for k, r in records.items() if not k[1].startswith("train")}
    assert {r["cuda"] for r in gpu.values()} == {"3", "5"}  # one device each, both used
    assert {r["cuda"] for r in cpu.values()} == {""}

    def most_at_once(intervals):
        events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
        now = best = 0
        for _, step in events:
            now += step
            best = max(best, now)
        return best

    for device in ("3", "5"):
        assert most_at_once([(r["start"], r["end"]) for r in gpu.values() if r["cuda"] == device]) == 2
    assert most_at_once([(r["start"], r["end"]) for r in cpu.values()]) <= 2


def test_a_failed_stage_is_one_line_naming_its_log_and_the_rest_goes_on(tmp_path, capsys):
    rows = sweep.plan(["pointmaze-umaze", "pointmaze-large"], tmp_path)

    def build(dataset, w, scale, gpu):
        return row_stages(dataset, w, scale, gpu, fail="synther-model" if dataset == "pointmaze-large" else None)

    summary, outcome = _run_sweep(rows, tmp_path, Limits(gpus=("0",), cpu_jobs=1), build=build)
    log = tmp_path / "pointmaze-large" / "logs" / "synther-model.log"
    assert outcome.failed == [outcome.failed[0]] and "\n" not in outcome.failed[0]
    assert outcome.failed[0].startswith("error: stage pointmaze-large/synther-model failed (exit 1) after ")
    assert f"log {log}" in outcome.failed[0] and "ValueError: bad input" in outcome.failed[0]
    assert "ValueError: bad input" in log.read_text()
    # what needs the failed stage is not run; the rest of that row and the other row are
    assert sorted(outcome.blocked) == ["pointmaze-large/compare", "pointmaze-large/rl", "pointmaze-large/synther"]
    done = json.loads((tmp_path / "pointmaze-large" / "stages.json").read_text())
    assert set(done) == {"data", "gta-model", "gta", "s4rl"}
    assert [r["status"] for r in summary["rows"]] == ["done", "failed"]
    # fixed, the rerun runs only what is left
    capsys.readouterr()
    summary, outcome = _run_sweep(rows, tmp_path, Limits(gpus=("0",), cpu_jobs=1))
    out = capsys.readouterr().out
    assert outcome.ok and [r["status"] for r in summary["rows"]] == ["done", "done"]
    started = sorted(line.split("] ", 1)[1].split(":")[0] for line in out.splitlines() if ": start" in line)
    assert started == ["pointmaze-large/compare", "pointmaze-large/rl", "pointmaze-large/synther",
                       "pointmaze-large/synther-model"]


def test_fail_fast_stops_the_others_and_shows_the_log_tail(tmp_path):
    w = tmp_path / "row"
    stages = [stand_in("bad", (), w, seconds=0.2, code=2), stand_in("slow", (), w, seconds=60)]
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match=r"stage bad failed \(exit 2\)") as e:
        run_graphs([Graph(w, stages)], Limits(jobs=2), poll_s=0.05)
    assert time.perf_counter() - t0 < 30  # the slow stage was stopped, not waited for
    assert str(w / "logs" / "bad.log") in str(e.value) and "ValueError: bad input" in str(e.value)
    assert set(json.loads((w / "stages-partial.json").read_text())) == {"slow"}


def test_stop_after_s_stops_the_running_stages_and_a_rerun_continues(tmp_path):
    w = tmp_path / "row"
    stages = [stand_in("quick", (), w), stand_in("slow", ("quick",), w, seconds=60)]
    outcome = run_graphs([Graph(w, stages)], Limits(jobs=2), stop_after_s=3, poll_s=0.05)
    assert outcome.stopped and not outcome.failed
    assert set(json.loads((w / "stages.json").read_text())) == {"quick"}
    assert json.loads((w / "stages-partial.json").read_text())["slow"] > 0
    assert not _alive(int((w / "slow.json.pid").read_text()))  # SIGTERM ended it
    stages[1] = stand_in("slow", ("quick",), w, seconds=0.05)
    with pytest.raises(SystemExit, match="another command"):  # another scale is refused, not mixed in
        run_graphs([Graph(w, [stand_in("quick", (), w, seconds=9)])], poll_s=0.05)
    outcome = run_graphs([Graph(w, stages)], poll_s=0.05)
    assert outcome.ok
    ledger = json.loads((w / "stages.json").read_text())
    assert ledger["slow"]["wall_s"] > 1.0  # its stopped call's time counts
    assert json.loads((w / "stages-partial.json").read_text()) == {}


def test_a_terminated_scheduler_stops_its_stages_and_keeps_their_time(tmp_path):
    """SIGTERM or Ctrl-C to reproduce.py or sweep.py: the stages (in sessions of their own) do not run on unseen."""
    w = tmp_path / "row"
    driver = f"""
import sys
sys.path.insert(0, {str(ROOT / "tools")!r})
from stage_scheduler import Graph, Limits, Stage, run_graphs
stages = [Stage("slow", (), {stand_in("slow", (), w, seconds=120).command!r})]
run_graphs([Graph(__import__("pathlib").Path({str(w)!r}), stages)], Limits(jobs=1), poll_s=0.05)
"""
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = w / "slow.json.pid"
    t0 = time.perf_counter()
    while not pid_file.exists() and time.perf_counter() - t0 < 60:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "interrupted: the running stages were stopped" in err
    assert "slow: stopping (interrupted)" in out
    assert not _alive(int(pid_file.read_text()))
    assert json.loads((w / "stages-partial.json").read_text())["slow"] > 0


def _alive(pid: int, within_s: float = 10.0) -> bool:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < within_s:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


def test_command_line_errors_are_one_line(tmp_path, capsys, monkeypatch):
    def error(*argv):
        with pytest.raises(SystemExit) as e:
            sweep.main([*map(str, argv)])
        assert e.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert "no Table 1 row for 'ant-medium'" in error("ant-medium", "--root", tmp_path)
    assert "OPTION=VALUE" in error("hopper-medium", "--root", tmp_path, "--variant", "a:b")
    assert "--gpus needs --gpu" in error("hopper-medium", "--root", tmp_path, "--gpus", "2")
    assert "give a count" in error("hopper-medium", "--root", tmp_path, "--gpu", "--gpus", "0,,1")
    assert "is for --backend local" in error("hopper-medium", "--root", tmp_path, "--backend", "ray", "--gpus", "2")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    assert "needs ray (pip install ray)" in error("hopper-medium", "--root", tmp_path, "--backend", "ray")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "no GPU found" in error("hopper-medium", "--root", tmp_path, "--gpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,7")
    assert sweep.detect_gpus() == ("2", "7")
    assert sweep.parse_gpus("3") == ("0", "1", "2") and sweep.parse_gpus("1,4") == ("1", "4")
    assert not list(tmp_path.iterdir())  # nothing was written


def test_ray_backend_runs_the_sweep_as_tasks(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import sweep_ray
    finally:
        sys.path.remove(str(ROOT / "tools"))

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # Ray gives its (declared) GPUs to the tasks
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        executor = sweep_ray.RayExecutor(per_gpu=1)
        rows = sweep.plan(["pointmaze-umaze", "pointmaze-large"], tmp_path)

        def build(dataset, w, scale, gpu):
            return row_stages(dataset, w, scale, gpu, fail="s4rl" if dataset == "pointmaze-large" else None)

        summary, outcome = _run_sweep(rows, tmp_path, Limits(), executor, build=build, backend="ray")
        assert [r["status"] for r in summary["rows"]] == ["done", "failed"]
        log = tmp_path / "pointmaze-large" / "logs" / "s4rl.log"
        assert len(outcome.failed) == 1 and f"log {log}" in outcome.failed[0] and "\n" not in outcome.failed[0]
        records = {s.name: json.loads((rows[0].workdir / f"{s.name}.json").read_text())
                   for s in row_stages("pointmaze-umaze", rows[0].workdir, None, True)}
        assert {r["cuda"] for n, r in records.items() if n in ("gta-model", "gta", "rl")} <= {"0", "1"}
        assert records["data"]["cuda"] == "" and records["compare"]["cuda"] == ""
        assert "# on " in (rows[0].workdir / "logs" / "rl.log").read_text()  # which machine ran it
        # fixed, the rerun submits only what is left
        capsys.readouterr()
        summary, outcome = _run_sweep(rows, tmp_path, Limits(), executor, backend="ray")
        out = capsys.readouterr().out
        assert outcome.ok and [r["status"] for r in summary["rows"]] == ["done", "done"]
        assert "pointmaze-umaze" not in "".join(line for line in out.splitlines() if ": start" in line)
        # --stop-after-s: the running task is cancelled, which stops its stage with SIGTERM
        w = tmp_path / "stopped"
        slow = [stand_in("quick", (), w), stand_in("slow", ("quick",), w, seconds=120)]
        t0 = time.perf_counter()
        outcome = run_graphs([Graph(w, slow)], Limits(), executor, stop_after_s=6, poll_s=0.05)
        assert outcome.stopped and time.perf_counter() - t0 < 60
        assert set(json.loads((w / "stages.json").read_text())) == {"quick"}
        assert not _alive(int((w / "slow.json.pid").read_text())) and not (w / "slow.json").exists()
        # a stage needing a GPU is refused at once by a cluster without any
        monkeypatch.setattr(executor.ray, "cluster_resources", lambda: {"CPU": 2.0})
        with pytest.raises(SystemExit, match="no GPU"):
            executor.check([stage_scheduler.Graph(tmp_path, [stand_in("t", (), tmp_path, gpu=True)])])
    finally:
        ray.shutdown()
