"""The simulators: their versions in provenance and pyproject, and the notices gta-data keeps quiet."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from gta_data.simulators import MujocoWarning, make_env, simulator_versions

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]


def test_declared_simulator_bounds_hold_the_installed_versions():
    from packaging.requirements import Requirement

    requirements = {Requirement(r).name: Requirement(r) for r in _extras()["recipes"]}
    for name, version in simulator_versions().items():
        req = requirements[name]
        assert req.specifier.contains(version), (name, version, str(req.specifier))
        assert any(spec.operator == "<" for spec in req.specifier), f"{name} has no upper bound"


def test_download_dependency_is_declared():
    from packaging.requirements import Requirement

    minari = next(Requirement(r) for r in _extras()["minari"] if Requirement(r).name == "minari")
    assert "hf" in minari.extras
    assert "xarray" in "".join(_extras()["xarray"]) and "xarray" in "".join(_extras()["all"])


def test_recipe_provenance_records_the_simulators(tmp_path):
    from gta_data.recipes import make_dataset

    store = make_dataset("random", tmp_path / "r.zarr", size=20, env_id="HalfCheetah-v5")
    assert store.provenance["simulators"] == simulator_versions()
    assert store.provenance["simulators"]["mujoco"] is not None


def _run_quietly(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_making_envs_prints_nothing_and_writes_no_mujoco_log(tmp_path):
    # A fresh interpreter: gymnasium-robotics' import notice and MuJoCo's settotalmass deprecation (printed,
    # and appended to MUJOCO_LOG.TXT in the working directory) come once per process.
    code = ("import warnings; warnings.simplefilter('error')\n"
            "from gta_data.simulators import make_env\n"
            "make_env('PointMaze_UMaze-v3').reset(seed=0)\n"
            "make_env('HalfCheetah-v5').reset(seed=0)\n")
    result = _run_quietly(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert list(tmp_path.iterdir()) == []


_NAN_STEP = ("import mujoco\n"
             "model = mujoco.MjModel.from_xml_string(\"<mujoco><worldbody><body><joint/><geom size='.1'/></body>"
             "</worldbody></mujoco>\")\n"
             "data = mujoco.MjData(model)\n"
             "data.qpos[:] = float('nan')\n"
             "mujoco.mj_step(model, data)\n")


def test_mujoco_warnings_made_errors_are_printed_not_raised_through_mujoco(tmp_path):
    # An exception raised in MuJoCo's warning callback would abort the interpreter.
    code = ("import warnings; warnings.simplefilter('error')\n"
            "from gta_data.simulators import quiet_mujoco; quiet_mujoco()\n" + _NAN_STEP + "print('alive')")
    result = _run_quietly(code, tmp_path)
    assert result.returncode == 0 and result.stdout == "alive\n", result.stderr
    assert result.stderr.startswith("MuJoCo warning: Nan, Inf or huge value in QPOS")


def test_other_mujoco_warnings_become_python_warnings(tmp_path):
    import mujoco

    make_env("HalfCheetah-v5").close()  # installs the handler
    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><body><joint/><geom size='.1'/></body></worldbody>"
                                           "</mujoco>")
    data = mujoco.MjData(model)
    data.qacc_warmstart[:] = float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data.qpos[:] = float("nan")
        mujoco.mj_step(model, data)
    assert any(issubclass(w.category, MujocoWarning) for w in caught), [str(w.message) for w in caught]
