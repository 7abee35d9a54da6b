"""tools/reproduce.py: a Table 1 row end to end at a tiny scale on the CPU (in two parts, merged), reruns that redo nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "reproduce.py"


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_a_row_in_two_parts_stopped_continued_rerun_then_merged_from_their_small_files(tmp_path):
    a, b, merged = tmp_path / "a", tmp_path / "b", tmp_path / "row"
    part_a = ("pointmaze-umaze", "--workdir", a, "--tiny", "--jobs", "2", "--methods", "gta,none")
    # a time-limited session: the stages still running are stopped, the finished ones recorded
    stopped = _run(*part_a, "--stop-after-s", "12")
    assert stopped.returncode == 3, stopped.stdout[-3000:] + stopped.stderr[-3000:]
    assert "rerun the same command to continue" in stopped.stdout
    partial = json.loads((a / "stages-partial.json").read_text())
    assert partial and all(v > 0 for v in partial.values())
    first = _run(*part_a)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    part = json.loads((a / "row.json").read_text())
    assert part["methods"] == ["none", "gta"] and set(part["scores"]) == {"none", "gta"}
    assert set(part["welch_gta_vs"]) == {"none"} and set(part["quality"]) == {"gta"}
    stages = json.loads((a / "stages.json").read_text())
    assert set(stages) == {"data", "gta-model", "gta", "rl", "quality-gta", "compare"}  # no baseline's stage
    assert not (a / "s4rl.zarr").exists() and not (a / "synther-model").exists()
    assert all(v["wall_s"] is not None for v in stages.values())
    for name, seconds in partial.items():  # a stage's wall time counts its stopped calls too
        assert stages[name]["wall_s"] > seconds
    assert json.loads((a / "stages-partial.json").read_text()) == {}

    mtimes = {p: p.stat().st_mtime_ns for p in (a / "rl").rglob("checkpoint.safetensors")}
    again = _run(*part_a, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier") == len(stages) and ": start" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing was trained again
    # another scale or another part in the same folder is refused, not mixed with the finished stages
    for change in (("--rl-steps", "50"), ("--methods", "none")):
        other = _run(*part_a[:6], *change, timeout=120)
        assert other.returncode != 0 and "another command" in other.stderr, change
    # the parts must cover the row: one part alone is refused, before anything is written
    alone = _run("pointmaze-umaze", "--workdir", merged, "--tiny", "--merge", a, timeout=120)
    assert alone.returncode != 0 and "a row needs each of" in alone.stderr and not merged.exists()

    second = _run("pointmaze-umaze", "--workdir", b, "--tiny", "--jobs", "2", "--methods", "s4rl,synther")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    # SynthER's arm trains on its samples alone, in the original data's env settings
    synther_run = json.loads((b / "rl" / "synther" / "config.json").read_text())
    assert synther_run["data"] == [str(b / "synther.zarr")]
    assert synther_run["env_kwargs"] == json.loads((a / "rl" / "none" / "config.json").read_text())["env_kwargs"]
    # what a part sends to the merge: its row, ledger, comparison, quality reports and arms' small files
    for part_dir in (a, b):
        for p in list(part_dir.iterdir()):
            if p.name not in ("row.json", "stages.json", "rl", "compare") and not p.name.startswith("quality-"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        for p in (part_dir / "rl").rglob("*"):
            if p.is_file() and p.name not in ("config.json", "results.json", "metrics.jsonl"):
                p.unlink()
    other = _run("pointmaze-umaze", "--workdir", merged, "--tiny", "--rl-steps", "50", "--merge", a, b, timeout=120)
    assert other.returncode != 0 and "scale" in other.stderr and not merged.exists()
    done = _run("pointmaze-umaze", "--workdir", merged, "--tiny", "--merge", a, b, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    row = json.loads((merged / "row.json").read_text())
    assert row["algorithm"] == "iql" and set(row["scores"]) == {"none", "s4rl", "synther", "gta"}
    for method, cell in row["scores"].items():
        assert cell["seeds"] == 2 and cell["mean"] == cell["mean"], method  # a number, not NaN
        # the scores come from the arms' own run directories, one per method
        results = json.loads((merged / "rl" / method / "results.json").read_text())
        finals = [s["final_score"] for s in results["seeds"].values()]
        assert cell["mean"] == pytest.approx(sum(finals) / len(finals))
    assert set(row["welch_gta_vs"]) == {"none", "s4rl", "synther"}
    assert set(row["quality"]) == {"s4rl", "synther", "gta"}
    assert all(q["dynamic_mse"] is not None for q in row["quality"].values())
    assert row["paper"]["gta"] == [41.68, 1.41]
    assert row["protocol"]["generated"] == 2000 and row["protocol"]["rl_steps"] == 40
    # the merged row's cells are the parts' own
    assert row["scores"]["gta"] == part["scores"]["gta"] and row["scores"]["none"] == part["scores"]["none"]
    assert row["welch_gta_vs"]["none"] == part["welch_gta_vs"]["none"]
    assert [p["methods"] for p in row["parts"]] == [["none", "gta"], ["s4rl", "synther"]]
    assert "rl[none,gta]" in row["stage_wall_s"] and "synther-model[s4rl,synther]" in row["stage_wall_s"]
    md = (merged / "row.md").read_text()
    assert "| gta |" in md and "| synther |" in md and "Stage wall times" in md
    # a row's own workdir is not a merge target
    into_part = _run("pointmaze-umaze", "--workdir", b, "--tiny", "--merge", a, b, timeout=120)
    assert into_part.returncode != 0 and "merge into another" in into_part.stderr


def test_stages_follow_the_paper(tmp_path):
    sys.path.insert(0, str(TOOL.parent))
    try:
        import reproduce
    finally:
        sys.path.remove(str(TOOL.parent))
    stages = {s.name: s for s in reproduce.build_stages("hopper-medium", tmp_path, reproduce.Scale(), gpu=True)}
    rl = stages["rl"].command
    arms = [rl[i + 1] for i, a in enumerate(rl) if a == "--arm"]
    w = str(tmp_path)
    assert arms == [f"none={w}/original.zarr", f"s4rl={w}/original.zarr,{w}/s4rl.zarr", f"synther={w}/synther.zarr",
                    f"gta={w}/original.zarr,{w}/gta.zarr"]
    assert rl[rl.index("train") + 1] == "td3bc" and rl[rl.index("--steps") + 1] == "1000000"
    assert rl[rl.index("--batch-size") + 1] == "1024" and rl[rl.index("--seeds") + 1] == "0-7"
    gta = stages["gta"].command
    assert gta[gta.index("--num-transitions") + 1] == "5000000"
    assert gta[gta.index("--dataset-preset") + 1] == "hopper-medium"
    synther = stages["synther-model"].command
    assert synther[synther.index("--steps") + 1] == "100000"
    maze = {s.name: s for s in reproduce.build_stages("pointmaze-large", tmp_path, reproduce.Scale(), gpu=True)}
    assert maze["rl"].command[maze["rl"].command.index("train") + 1] == "iql"
    assert "--fused-mlp" not in maze["rl"].command
    assert maze["gta"].command[maze["gta"].command.index("--dataset-preset") + 1] == "maze2d"
