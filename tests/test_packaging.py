"""Each package installs and imports on its own, with only its declared dependencies.

Three layers: (1) a static scan of every import in every package against the distributions the
package declares (dependencies, extras, and what the extras of those bring); (2) every module of every
package imported in a fresh interpreter that refuses the sibling gta packages the package does not
declare; (3) gta-data, the package the others share, installed into a fresh virtual environment with
nothing but its declared dependencies (no torch), and used there.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
# Modules that only an extra's dependencies make importable (the rest of the package imports them lazily).
EXTRA_MODULES = {"gta-rl": {"gta_rl.kernels._triton"},  # gta-rl[fused]: triton
                 "gta-data": {"gta_data.accel.cuda_graph", "gta_data.accel.devices"}}  # gta-data[torch]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project(pkg: Path) -> dict:
    return tomllib.loads((pkg / "pyproject.toml").read_text())["project"]


def _module_name(pkg: Path) -> str:
    return _project(pkg)["name"].replace("-", "_")


def _declared(pkg: Path) -> set[str]:
    project = _project(pkg)
    reqs = [Requirement(r) for r in project.get("dependencies", [])]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    names: set[str] = set()
    for req in reqs:
        names.add(_norm(req.name))
        # What `dist[extra]` brings in counts as declared too (e.g. gymnasium[mujoco] -> mujoco).
        for extra in req.extras:
            try:
                requires = md.requires(req.name) or []
            except md.PackageNotFoundError:
                continue
            for line in requires:
                sub = Requirement(line)
                if sub.marker is not None and sub.marker.evaluate({"extra": extra}):
                    names.add(_norm(sub.name))
    return names


def _installed(dist: str) -> bool:
    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        return False
    return True


def _imports(pkg: Path) -> dict[str, list[str]]:
    """Top-level modules imported by the package's source -> files that import them."""
    found: dict[str, list[str]] = {}
    for path in (pkg / "src").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                found.setdefault(mod.split(".")[0], []).append(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_every_import_is_declared(pkg):
    own = _module_name(pkg)
    declared = _declared(pkg)
    dists_of = md.packages_distributions()
    undeclared = []
    for module, files in sorted(_imports(pkg).items()):
        if module == own or module in sys.stdlib_module_names or module == "__future__":
            continue
        dists = {_norm(d) for d in dists_of.get(module, [])}
        if module.startswith("gta_"):
            dists = {module.replace("_", "-")}
        if not dists and _norm(module) in declared:
            continue  # declared, but not installed in this environment (e.g. the extra gta-rl[fused]'s triton)
        if not dists:
            undeclared.append(f"{module} (not installed; imported in {files[0]})")
        elif not dists & declared:
            undeclared.append(f"{module} from {sorted(dists)} (imported in {files[0]})")
    assert not undeclared, f"{pkg.name} imports undeclared dependencies: {undeclared}"


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_modules_import_without_undeclared_siblings(pkg):
    own = _module_name(pkg)
    allowed = {own} | {d.replace("-", "_") for d in _declared(pkg) if d.startswith("gta-")}
    blocked = sorted({_module_name(p) for p in PACKAGES} - allowed)
    modules = sorted(
        ".".join(path.relative_to(pkg / "src").with_suffix("").parts).removesuffix(".__init__")
        for path in (pkg / "src").rglob("*.py")
        if path.name != "__main__.py"
    )
    # The modules of an extra (EXTRA_MODULES) may need what the extra installs; no other module may.
    missing_extras = sorted(_norm(req.name).replace("-", "_")
                            for extra in _project(pkg).get("optional-dependencies", {}).values()
                            for req in map(Requirement, extra) if not _installed(req.name))
    extra_modules = sorted(EXTRA_MODULES.get(pkg.name, ()))
    script = textwrap.dedent(f"""
        import importlib, importlib.abc, sys
        BLOCKED = {blocked!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is not a declared dependency")
        sys.meta_path.insert(0, Block())
        for mod in {modules!r}:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                if mod not in {extra_modules!r} or (exc.name or "").split(".")[0] not in {missing_extras!r}:
                    raise
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_console_script_help(pkg):
    script = Path(sys.executable).parent / _project(pkg)["name"]
    assert script.exists(), f"console script {script.name} is not installed"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


@pytest.mark.slow
def test_gta_data_installs_alone_without_torch(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT / "packages" / "gta-data")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = textwrap.dedent(f"""
        import sys, numpy as np
        import gta_data
        from gta_data import Transitions, write_store, TrajectoryStore, window_starts
        n = 40
        t = Transitions(np.ones((n, 3)), np.ones((n, 2)), np.arange(n), np.ones((n, 3)),
                        np.zeros(n, bool), np.zeros(n, bool))
        s = write_store({str(tmp_path / 'x.zarr')!r}, t, np.array([10, 40]), env_id="Hopper-v5")
        assert TrajectoryStore.open(s.path).load().rewards.sum() == sum(range(n))
        assert len(window_starts(s.episode_ends, 5)) == 6 + 26
        assert "torch" not in sys.modules
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch is importable in gta-data's own environment")
    """)
    proc = subprocess.run([str(py), "-c", check], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-1000:]
    proc = subprocess.run([str(venv / "bin" / "gta-data"), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "validate" in proc.stdout


def test_hatch_workspace_installs_every_package_editable_with_triton():
    # `hatch run test` must test the working tree: every package is a workspace member (installed editable),
    # none is a plain dependency (a non-editable copy, stale until the env is rebuilt), and gta-rl's
    # `fused` extra brings Triton for the fused kernels' CPU-interpreter tests.
    env = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["envs"]["default"]
    members = {}
    for m in env.get("workspace", {}).get("members", []):
        m = {"path": m} if isinstance(m, str) else m
        members[Path(m["path"]).name] = set(m.get("features", []))
    assert sorted(members) == [p.name for p in PACKAGES]
    assert "all" in members["gta-data"] and "fused" in members["gta-rl"]
    assert not [d for d in env.get("dependencies", []) if Requirement(d).name.startswith("gta-")]
