import json

import numpy as np
import zarr
from typer.testing import CliRunner

from gta_data import TrajectoryStore
from gta_data.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("make", "import", "export", "info", "validate", "recipes"):
        assert command in result.output


def test_make_info_validate_export_import(tmp_path):
    out = tmp_path / "u.zarr"
    result = runner.invoke(app, ["make", "pointmaze-umaze", "--out", str(out), "--size", "700", "--seed", "1",
                                 "--minari-id", "gta/pointmaze/umaze-cli-v0"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and TrajectoryStore.open(out).num_transitions == 700

    result = runner.invoke(app, ["info", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["transitions"] == 700 and summary["env_id"] == "PointMaze_UMaze-v3"
    assert summary["reference_scores"] == {"min": 23.85, "max": 161.86}
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0 and "PointMaze_UMaze-v3" in result.output

    assert runner.invoke(app, ["validate", str(out)]).exit_code == 0

    back = tmp_path / "back.zarr"
    result = runner.invoke(app, ["import", "gta/pointmaze/umaze-cli-v0", "--out", str(back)])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(TrajectoryStore.open(back).load().actions, TrajectoryStore.open(out).load().actions)

    result = runner.invoke(app, ["export", str(back), "--dataset-id", "gta/pointmaze/umaze-cli2-v0"])
    assert result.exit_code == 0, result.output


def test_recipes_command():
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0 and "pointmaze-large" in result.output and "random" in result.output


def test_errors_are_one_line_with_exit_code_1(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "missing.zarr")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "no store at" in result.output

    out = tmp_path / "u.zarr"
    assert runner.invoke(app, ["make", "pointmaze-umaze", "--out", str(out), "--size", "50"]).exit_code == 0
    group = zarr.open_group(store=str(out), mode="r+")
    group["data/rewards"][3] = np.nan
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 1 and "contains NaN" in result.output

    result = runner.invoke(app, ["make", "pointmaze-umaze", "--out", str(out), "--size", "50"])
    assert result.exit_code == 1 and "already exists" in result.output
    result = runner.invoke(app, ["make", "no-such-recipe", "--out", str(tmp_path / "n.zarr")])
    assert result.exit_code == 1 and "unknown recipe" in result.output
    result = runner.invoke(app, ["import", "nobody/none/x-v0", "--out", str(tmp_path / "i.zarr")])
    assert result.exit_code == 1 and "not found locally" in result.output


def test_make_locomotion_with_shipped_and_given_files(tmp_path):
    from gta_data.policies import policy_dir

    out = tmp_path / "hm.zarr"
    result = runner.invoke(app, ["make", "hopper-medium", "--out", str(out), "--size", "300"])
    assert result.exit_code == 0, result.output
    assert "300 transitions" in result.output
    given = runner.invoke(app, ["make", "hopper-medium-replay", "--out", str(tmp_path / "r.zarr"), "--size", "500",
                                "--replay-file", str(policy_dir() / "hopper-medium-replay.npz")])
    assert given.exit_code == 0, given.output
    missing = runner.invoke(app, ["make", "hopper-expert", "--out", str(tmp_path / "e.zarr"),
                                  "--policy-file", str(tmp_path / "none.npz")])
    assert missing.exit_code != 0 and "none.npz is missing" in missing.output
    wrong = runner.invoke(app, ["make", "pointmaze-umaze", "--out", str(tmp_path / "p.zarr"),
                                "--policy-file", str(tmp_path / "none.npz")])
    assert wrong.exit_code != 0 and "options of the locomotion recipes" in wrong.output
    assert not (tmp_path / "e.zarr").exists() and not (tmp_path / "p.zarr").exists()


def test_make_refuses_env_for_a_recipe_without_one(tmp_path):
    res = runner.invoke(app, ["make", "pointmaze-umaze", "--out", str(tmp_path / "u.zarr"), "--size", "10",
                              "--env", "Hopper-v5"])
    assert res.exit_code != 0
    assert "takes no --env" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "u.zarr").exists()
