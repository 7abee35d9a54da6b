"""The README's install lines, as a user runs them from a clone.

The per-package lines (``pip install packages/gta-data packages/<name>``) are read from the README and
each is installed into its own fresh virtual environment (no system site packages, so a dependency the
package forgets to declare is missing there too), after ``pip install torch==2.13.0`` (the CPU wheel this
project's machines hold locally; on a CPU machine elsewhere the README's CPU index line does the same).
There the package's console script must print its help and run one small command on a store written with
gta-data's API. Marked ``install`` (several minutes of pip): ``pytest -m install`` runs only these,
``-m 'not install'`` skips them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TORCH = "torch==2.13.0"
PIP = ["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]

# A store the commands can read: 240 HalfCheetah-v5-shaped transitions in 4 episodes (random numbers: the
# oracle and the evaluation env only need finite states), written with gta-data's API in the new venv.
MAKE_STORE = textwrap.dedent("""
    import sys
    import numpy as np
    from gta_data import Transitions, write_store
    rng = np.random.default_rng(0)
    n = 240
    obs = 0.1 * rng.normal(size=(n + 1, 17))
    t = Transitions(obs[:-1], rng.uniform(-1, 1, (n, 6)), rng.normal(size=n), obs[1:],
                    np.zeros(n, bool), np.arange(n) % 60 == 59)
    write_store(sys.argv[1], t, np.arange(1, 5) * 60, env_id="HalfCheetah-v5")
""")

# package -> (one small command, text its output must hold); {store} and {tmp} are filled in.
COMMANDS = {
    "gta-diffusion": ("augment --method s4rl --data {store} --out {tmp}/s4rl.zarr --num-transitions 120",
                      "s4rl.zarr"),
    "gta-rl": ("train td3bc --data {store} --out {tmp}/run --seeds 0 --steps 20 --batch-size 16 "
               "--eval-episodes 1 --log-every 10", "seed 0: final"),
    "gta-eval": ("quality --original {store} --augmented {store} --samples 60 --segments 4 --workers 1 "
                 "--device cpu --out {tmp}/quality", "report written to"),
    "gta-pixel": ("bench --quick --device cpu --steps 1 --warmup 0 --seeds 1 --mode stacked", "DrQ+BC updates"),
}


def install_lines() -> dict[str, list[str]]:
    """package -> the README's install line for it (the words after ``pip install``): gta-data's folder, then
    the folders of the packages it needs, the package itself last."""
    lines = {}
    for match in re.finditer(r"^pip install (packages/gta-data(?: packages/gta-[a-z]+)+)(?=\s)", README, re.M):
        words = match.group(1).split()
        lines[words[-1].split("/")[1]] = words
    return lines


def test_readme_has_an_install_line_per_package_and_the_cpu_torch_line():
    packages = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
    assert sorted(install_lines()) == [p for p in packages if p != "gta-data"] == sorted(COMMANDS)
    assert re.search(r"^pip install packages/gta-data\s", README, re.M)
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in README


def _run(cmd: list, env: dict, timeout: int) -> str:
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"{shlex.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return proc.stdout


def _install(package: str, root: Path, env: dict) -> Path:
    """A fresh venv with torch and the README's line for ``package``; returns its bin directory."""
    venv = root / package / "venv"
    _run([sys.executable, "-m", "venv", venv], env, 120)
    py = venv / "bin" / "python"
    _run([py, *PIP, TORCH], env, 900)
    _run([py, *PIP, *install_lines()[package]], env, 900)  # from the repository root, as the README says
    return venv / "bin"


@pytest.mark.install
@pytest.mark.slow
@pytest.mark.parametrize("package", sorted(COMMANDS))
def test_readme_install_line_works_in_a_fresh_venv(package, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"MPLBACKEND": "Agg"}
    bin_dir = _install(package, tmp_path, env)
    installed = _run([bin_dir / "python", "-m", "pip", "list", "--format=freeze"], env, 120)
    named = {word.split("/")[1] for word in install_lines()[package]}
    assert {line.split("==")[0] for line in installed.splitlines() if line.startswith("gta-")} == named
    script = bin_dir / package
    assert "Usage" in _run([script, "--help"], env, 120)
    store = tmp_path / "store.zarr"
    _run([bin_dir / "python", "-c", MAKE_STORE, store], env, 120)
    command, expect = COMMANDS[package]
    out = _run([script, *shlex.split(command.format(store=store, tmp=tmp_path))], env, 300)
    assert expect in out, out[-2000:]
