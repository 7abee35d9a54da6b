"""The import structure of the packages (docs/architecture.md), checked by tools/check_imports.py: no import circle,
no upward import, the packages layered; and the checker itself finds each kind of problem."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import check_imports  # noqa: E402


def test_repository_has_no_circle_no_upward_import_and_keeps_its_layers():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "check_imports.py")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: ")


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_checker_reports_a_circle_an_upward_import_and_a_crossed_layer(tmp_path):
    _write(tmp_path, {
        "packages/gta-data/src/gta_data/__init__.py": "__version__ = '0'\nfrom gta_data.store import Store\n",
        "packages/gta-data/src/gta_data/store.py": "from gta_data import __version__\nclass Store: ...\n",
        "packages/gta-rl/src/gta_rl/__init__.py": "",
        "packages/gta-rl/src/gta_rl/a.py": "def f():\n    from gta_rl.b import g\n",
        "packages/gta-rl/src/gta_rl/b.py": "from gta_rl import a\nfrom gta_eval import stats\ndef g(): ...\n",
        "packages/gta-rl/src/gta_rl/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gta_eval import x\n",
        "packages/gta-eval/src/gta_eval/__init__.py": "",
        "packages/gta-eval/src/gta_eval/stats.py": "from . import stats as again\n",
    })
    problems = check_imports.check(tmp_path)
    text = "\n".join(problems)
    assert "upward import: gta_data.store imports __version__ from gta_data/__init__" in text
    assert "import circle: gta_data <-> gta_data.store" in text
    assert "import circle: gta_rl.a <-> gta_rl.b" in text  # through a lazy import inside a function
    assert "import circle: gta_eval.stats" in text  # a relative import of the module itself
    assert "gta_rl.b imports gta_eval.stats (a gta_rl module may import gta_data)" in text
    assert "gta_rl.c" not in text  # TYPE_CHECKING imports are left out
    assert len(problems) == 5, problems


def test_checker_accepts_sibling_submodules_imported_through_the_package(tmp_path):
    _write(tmp_path, {
        "packages/gta-rl/src/gta_rl/__init__.py": "from gta_rl._version import __version__\n",
        "packages/gta-rl/src/gta_rl/_version.py": "__version__ = '0'\n",
        "packages/gta-rl/src/gta_rl/a.py": "from gta_rl import b\nfrom gta_rl._version import __version__\n",
        "packages/gta-rl/src/gta_rl/b.py": "import numpy\n",
    })
    assert check_imports.check(tmp_path) == []


def test_public_api_is_lazy_and_leaves_the_modules_reachable():
    code = textwrap.dedent("""
        import sys
        import gta_diffusion, gta_eval, gta_rl
        assert "torch" not in sys.modules, "importing a package must not import torch"
        for pkg in (gta_diffusion, gta_rl, gta_eval):
            for name in pkg.__all__:
                assert getattr(pkg, name) is not None, (pkg.__name__, name)
        from gta_diffusion import AugmentConfig, Trainer, augment, train
        from gta_rl import RunConfig
        import gta_diffusion.augmentation as aug_module
        import gta_rl.training as train_module
        assert callable(aug_module.augment) and aug_module.AugmentConfig is AugmentConfig
        import gta_diffusion  # the functions, not modules: the package's modules have other names
        assert gta_diffusion.augment is augment is aug_module.augment and gta_diffusion.train is train
        assert callable(train) and not isinstance(train, type(sys))
        assert callable(train_module.train) and train_module.RunConfig is RunConfig
        assert gta_rl.train is train_module.train  # the function: no module of that name hides it
        assert Trainer.__module__ == "gta_diffusion.training"
        try:
            gta_rl.no_such_name
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError("unknown names must raise AttributeError")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_cli_runs_as_a_module():
    """``python -m gta_<pkg>.cli`` is the package's app (what torchrun and users without the console scripts run)."""
    import pytest

    for pkg in ("gta_data", "gta_diffusion", "gta_rl", "gta_eval", "gta_pixel"):
        result = subprocess.run([sys.executable, "-m", f"{pkg}.cli", "--help"], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0 and "No module named" in result.stderr:
            pytest.skip(f"{pkg} is not installed here")
        assert result.returncode == 0 and "Usage" in result.stdout, (pkg, result.stdout[-500:], result.stderr[-500:])
