"""tools/reproduce_pixel.py: the pixel row (DrQ+BC alone, + original latents, + GTA latents, seed by seed) end to
end at a tiny scale on the CPU, a rerun that redoes nothing, a stopped call that a rerun continues, and the
stage graph of the GPU row."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "reproduce_pixel.py"
CONDITIONS = ("drqbc", "original", "gta")


def _run(*args, timeout=600):
    # one torch thread per stage: two stages at once on a small CPU would otherwise fight over its cores
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def _tool():
    sys.path.insert(0, str(TOOL.parent))
    try:
        import reproduce_pixel
    finally:
        sys.path.remove(str(TOOL.parent))
    return reproduce_pixel


@pytest.mark.slow
def test_the_tiny_row_end_to_end_then_a_rerun_that_skips_every_stage(tmp_path):
    w = tmp_path / "row"
    first = _run("walker_walk-medium", "--workdir", w, "--tiny", "--jobs", "2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    row = json.loads((w / "row.json").read_text())
    assert row["seeds"] == [0, 1, 2] and row["dataset"] == "walker_walk-medium" and row["data"] == "fake random (--tiny)"
    assert row["measure"].startswith("return")  # the fake task has no reference scores
    per_seed = {c: [row["per_seed"][c][str(k)] for k in (0, 1, 2)] for c in CONDITIONS}
    # each score is its evaluation's: DrQ+BC's from the pretrained run (every seed), the arms' from seed k's run
    for k in (0, 1, 2):
        pre = json.loads((w / "pretrain" / "eval.json").read_text())
        assert per_seed["drqbc"][k] == pre["seeds"][str(k)]["mean_return"]
        for arm in ("original", "gta"):
            result = json.loads((w / f"finetune-{arm}-{k}" / "eval.json").read_text())
            assert set(result["seeds"]) == {str(k)} and result["episode_seeds"] == pre["episode_seeds"]
            assert per_seed[arm][k] == result["seeds"][str(k)]["mean_return"]
        config = json.loads((w / f"finetune-gta-{k}" / "config.json").read_text())
        assert config["seeds"] == [k] and config["data"] == [str(w / f"latent-{k}.zarr"), str(w / f"gta-{k}.zarr")]
        assert json.loads((w / f"finetune-original-{k}" / "config.json").read_text())["data"] == [
            str(w / f"latent-{k}.zarr")]
    # the paired statistics, recomputed from the per-seed scores
    for name, (a, b) in {"gta_minus_original": ("gta", "original"), "gta_minus_drqbc": ("gta", "drqbc"),
                         "original_minus_drqbc": ("original", "drqbc")}.items():
        diffs = [x - y for x, y in zip(per_seed[a], per_seed[b], strict=True)]
        mean = sum(diffs) / 3
        cell = row[name]
        assert cell["per_seed"] == pytest.approx(diffs) and cell["mean"] == pytest.approx(mean)
        assert cell["std"] == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2))
        test = stats.ttest_rel(per_seed[a], per_seed[b])
        if math.isfinite(test.statistic):
            assert cell["t"] == pytest.approx(test.statistic) and cell["p"] == pytest.approx(test.pvalue)
        else:
            assert cell["t"] is None and cell["p"] is None
        assert cell["df"] == 2
    for c in CONDITIONS:
        mean = sum(per_seed[c]) / 3
        assert row["scores"][c]["mean"] == pytest.approx(mean)
    scale = row["scale"]
    assert scale["dataset"]["num_episodes"] == 3 and scale["dataset"]["num_steps"] == 60
    assert scale["generated"] == {"0": 40, "1": 40, "2": 40} and scale["gta_preset"] == "vd4rl-medium"
    assert scale["std_duration_loop_steps"] == 3  # round(2 * 6 * 125/550)
    assert scale["pretrain_steps"] == 6 and scale["finetune_steps"] == 6 and scale["eval_episodes"] == 2
    stages = json.loads((w / "stages.json").read_text())
    per = ("encode", "model", "gta", "finetune-original", "finetune-gta", "eval-original", "eval-gta")
    assert set(stages) == {"data", "pretrain", "eval-pretrain"} | {f"{s}-{k}" for s in per for k in (0, 1, 2)}
    assert set(row["stage_wall_s"]) == set(stages) and all(v["wall_s"] is not None for v in stages.values())
    md = (w / "row.md").read_text()
    assert "| 2 |" in md and "paired t-test" in md and "Stage wall times" in md

    mtimes = {p: p.stat().st_mtime_ns for p in w.rglob("*.safetensors")}
    assert len([p for p in mtimes if p.name == "checkpoint.safetensors"]) == 1 + 6  # pretrained, six fine-tuned
    again = _run("walker_walk-medium", "--workdir", w, "--tiny", "--jobs", "2", timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier") == len(stages) and ": start" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing was trained again

    other = _run("walker_walk-medium", "--workdir", w, "--tiny", "--finetune-steps", "7", timeout=120)
    assert other.returncode != 0 and "another command" in other.stderr  # another scale: another workdir


@pytest.mark.slow
def test_a_stopped_pretraining_checkpoints_and_the_rerun_resumes_it(tmp_path):
    w = tmp_path / "row"
    args = ("walker_walk-medium", "--workdir", w, "--tiny", "--pretrain-steps", "1000000")
    first = _run(*args, "--stop-after-s", "12", timeout=120)  # data, then pretrain past its imports
    assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]
    assert "pretrain" in json.loads((w / "stages-partial.json").read_text())
    log = (w / "logs" / "pretrain.log").read_text()
    assert "stopped by SIGTERM at update" in log
    step = _checkpoint_step(w / "pretrain")
    assert step > 0
    second = _run(*args, "--stop-after-s", "10", timeout=120)
    assert second.returncode == 3, second.stdout[-3000:] + second.stderr[-3000:]
    commands = [line for line in (w / "logs" / "pretrain.log").read_text().splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and "--resume" not in commands[0] and commands[1].endswith("--resume")
    assert _checkpoint_step(w / "pretrain") > step


def _checkpoint_step(run: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(run / "checkpoint.safetensors"), "pt") as f:
        return int(f.get_tensor("model.step"))


def test_a_bad_task_level_is_a_one_line_error(tmp_path):
    for bad in ("walker_walk", "walker_walk-random", "hopper-medium", "walker_walk-medium-replayx"):
        res = _run(bad, "--workdir", tmp_path / "w", "--tiny", timeout=60)
        assert res.returncode == 1 and res.stdout == ""
        assert res.stderr.startswith("error: unknown TASK-LEVEL") and len(res.stderr.strip().splitlines()) == 1
    res = _run("walker_walk-medium", "--workdir", tmp_path / "w", "--seeds", "3", timeout=60)
    assert res.returncode == 1 and "at least two" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_the_gpu_row_stages(tmp_path):
    tool = _tool()
    assert tool.parse_task_level("cheetah_run-medium-replay") == ("cheetah_run", "medium-replay")
    stages = {s.name: s for s in tool.build_stages("walker_walk", "medium", tmp_path, tool.Scale(), gpu=True,
                                                    tiny=False)}
    w = str(tmp_path)

    def option(stage, name):
        command = stages[stage].command
        return [command[i + 1] for i, a in enumerate(command) if a == name]

    assert stages["data"].args[:3] == ["make", "walker_walk", "medium"] and option("data", "--episodes") == ["200"]
    assert option("pretrain", "--seeds") == ["0-2"] and "--fast" in stages["pretrain"].command
    assert stages["pretrain"].resume_flag == ["--resume"] and option("pretrain", "--device") == ["cuda"]
    # 50k updates keep V-D4RL's annealed fraction: std 0.1 from update 125k of 550k, here from 11,364 of 50k
    assert option("pretrain", "--std-duration") == ["22727"] and tool.std_duration(550_000) == 250_000
    for k in (0, 1, 2):
        assert option(f"encode-{k}", "--seed") == [str(k)] and stages[f"encode-{k}"].store == f"{w}/latent-{k}.zarr"
        assert option(f"model-{k}", "--data") == [f"{w}/latent-{k}.zarr"]
        assert option(f"gta-{k}", "--dataset-preset") == ["vd4rl-medium"]
        assert option(f"finetune-gta-{k}", "--data") == [f"{w}/latent-{k}.zarr", f"{w}/gta-{k}.zarr"]
        assert option(f"finetune-original-{k}", "--data") == [f"{w}/latent-{k}.zarr"]
        for arm in ("original", "gta"):
            assert option(f"finetune-{arm}-{k}", "--seeds") == [str(k)]
            assert option(f"finetune-{arm}-{k}", "--steps") == ["20000"]
            assert stages[f"eval-{arm}-{k}"].needs == (f"finetune-{arm}-{k}",)
    episodes = {option(s, "--episodes")[0] for s in stages if s.startswith("eval-")}
    assert episodes == {"10"} and len(stages) == 3 + 7 * 3
    # a scale option replaces its default, nothing else
    scale = tool.scale_from(False, {"finetune_steps": 300_000, "episodes": None})
    assert scale.finetune_steps == 300_000 and scale.episodes == 200


def test_the_row_states_the_std_schedule_it_ran():
    phrase = _tool()._std_phrase
    assert phrase({"std_duration_loop_steps": 22727, "pretrain_steps": 50_000}) == (
        "exploration std 1.0 -> 0.1 by update 11364, V-D4RL's fraction")
    assert phrase({"std_duration_loop_steps": 50_000, "pretrain_steps": 50_000}) == (
        "exploration std 1.0 -> 0.1 by update 25000, 50% of the run")
    # V-D4RL's unscaled 250k loop steps in a 50k-update run: 1 - 0.9 * 2 * 49,999 / 250,000
    assert phrase({"std_duration_loop_steps": 250_000, "pretrain_steps": 50_000}) == (
        "exploration std 1.0 -> 0.64 at the last update (V-D4RL's 0.1 not reached)")
