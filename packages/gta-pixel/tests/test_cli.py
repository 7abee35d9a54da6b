import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gta_pixel.cli import app
from gta_pixel.pixelstore import PixelStore

runner = CliRunner()


def one_line_error(result, match):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], result.output


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("make", "import-vd4rl", "info", "validate"):
        assert command in result.output


def test_make_info_validate(tmp_path):
    out = tmp_path / "f.zarr"
    result = runner.invoke(app, ["make", "fake:8", "random", "--out", str(out), "--episodes", "3", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "60 steps, 3 episodes" in result.output
    store = PixelStore.open(out)
    assert store.frame_shape == (3, 8, 8) and store.provenance["seed"] == 2
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0 and "60 steps, 3 episodes, 63 frames" in result.output
    result = runner.invoke(app, ["info", str(out), "--json"])
    assert json.loads(result.output)["num_frames"] == 63
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0 and result.output.startswith("ok:")


def test_make_errors(tmp_path):
    out = tmp_path / "f.zarr"
    one_line_error(runner.invoke(app, ["make", "fake:8", "mediocre", "--out", str(out)]), "unknown quality")
    one_line_error(runner.invoke(app, ["make", "walker", "random", "--out", str(out)]), "domain_task")
    one_line_error(runner.invoke(app, ["make", "fake:8", "expert", "--out", str(out), "--policy-file",
                                       str(tmp_path / "none.npz")]), "is missing")
    one_line_error(runner.invoke(app, ["make", "fake:8", "random", "--out", str(out), "--episodes", "0"]),
                   "at least 1")
    one_line_error(runner.invoke(app, ["make", "fake:8", "random", "--out", str(tmp_path / "no" / "f.zarr")]),
                   "does not exist")
    assert runner.invoke(app, ["make", "fake:8", "random", "--out", str(out), "--episodes", "1"]).exit_code == 0
    one_line_error(runner.invoke(app, ["make", "fake:8", "random", "--out", str(out)]), "already exists")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_make_medium_replay(tmp_path, record):
    from gta_data.replay import save_replay_file
    from gta_pixel.tasks import FakeTask

    replay, _, _ = record(FakeTask(size=8, act_dim=2, state_dim=4, max_steps=20).spec, [20, 20, 7])
    path = save_replay_file(tmp_path / "fake-medium-replay.npz", replay)
    out = tmp_path / "mr.zarr"
    result = runner.invoke(app, ["make", "fake:8", "medium-replay", "--out", str(out), "--replay-file", str(path)])
    assert result.exit_code == 0, result.output
    assert "47 steps, 3 episodes" in result.output
    assert "max return error 0, max last-observation error 0, 0 episode endings differ" in result.output
    assert PixelStore.open(out).provenance["replay_check"]["transitions"] == 47
    one_line_error(runner.invoke(app, ["make", "fake:8", "medium-replay", "--out", str(tmp_path / "x.zarr"),
                                       "--replay-file", str(path), "--episodes", "9"]), "holds 3")
    one_line_error(runner.invoke(app, ["make", "fake:8", "medium-replay", "--out", str(tmp_path / "x.zarr"),
                                       "--replay-file", str(tmp_path / "none.npz")]), "is missing")
    one_line_error(runner.invoke(app, ["make", "fake:8", "medium-replay", "--out", str(out),
                                       "--replay-file", str(path)]), "already exists")


def test_import_vd4rl_and_errors(tmp_path):
    pytest.importorskip("h5py")
    from gta_pixel.vd4rl import Episode, write_hdf5_shards

    rng = np.random.default_rng(0)
    episodes = [Episode(rng.integers(0, 256, (n + 1, 3, 6, 6), dtype=np.uint8), rng.normal(size=(n, 2)),
                        rng.normal(size=n), np.ones(n, np.float32)) for n in (4, 5)]
    src = tmp_path / "walker_walk" / "random" / "84px"
    write_hdf5_shards(src, episodes, shards=4)  # rows 0-2, 3-5, 6-8, 9-10 of episodes 0-4, 5-10
    result = runner.invoke(app, ["import-vd4rl", str(src), str(tmp_path / "v.zarr")])
    assert result.exit_code == 0, result.output
    assert "2 steps, 1 episodes, 1 cut, 8 skipped rows" in result.output  # as V-D4RL: 0.hdf5 alone
    (src / "0.hdf5").unlink()  # the data now begins mid-episode
    one_line_error(runner.invoke(app, ["import-vd4rl", str(src), str(tmp_path / "p.zarr")]), "--join-shards")
    result = runner.invoke(app, ["import-vd4rl", str(src), str(tmp_path / "p.zarr"), "--join-shards"])
    assert result.exit_code == 0, result.output
    assert "1 fragments" in result.output
    assert PixelStore.open(tmp_path / "p.zarr").task["domain"] == "walker"
    one_line_error(runner.invoke(app, ["import-vd4rl", str(tmp_path / "nothing"), str(tmp_path / "q.zarr")]),
                   "not a directory")
    one_line_error(runner.invoke(app, ["import-vd4rl", str(src), str(tmp_path / "p.zarr")]), "already exists")
    one_line_error(runner.invoke(app, ["info", str(src)]), "not a Zarr group")
    bad = tmp_path / "p.zarr" / "zarr.json"
    meta = json.loads(bad.read_text())
    meta["attributes"]["complete"] = False
    bad.write_text(json.dumps(meta))
    one_line_error(runner.invoke(app, ["info", str(tmp_path / "p.zarr")]), "incomplete")
