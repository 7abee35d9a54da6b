#!/usr/bin/env bash
# Add dm_control's suite (what gta-pixel's dmc tasks need) to the wheels in ./.whl that travel to a GPU
# machine without network, plus its small dependencies dm-env and dm-tree. Run from the repository root
# after the other wheels are in .whl (mujoco comes with gymnasium[mujoco]; absl-py, lxml, protobuf, scipy,
# pyparsing and PyOpenGL are on the device image or already in .whl).
#
#   tools/pixel-wheels.sh            # for the device: CPython 3.12, x86-64 manylinux
#   PY_VERSION=3.11 tools/pixel-wheels.sh
#
# dm_control's wheel is about 56 MB, almost all of it the locomotion, soccer and dog assets; the slim wheel (under 1 MB)
# written here keeps the package name and version (dm-control 1.0.52) and drops the sub-packages the suite
# does not use (locomotion, suite/dog_assets, manipulation, composer, entities, viewer, blender,
# mujoco/testing), with its RECORD rewritten to match. The suite's other domains (walker, cheetah, humanoid,
# quadruped, ...) load, step and render from it; the dog domain does not (its assets are gone). The script
# checks that walker_walk loads from the slim wheel before it keeps it.
set -euo pipefail
PY_VERSION=${PY_VERSION:-3.12}
PYTHON=${PYTHON:-python3}
out=.whl
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$tmp/dl" "dm-control==1.0.52" "dm-env==1.6" 2>&1 \
  | grep -v "is ignored" || true
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  "${platforms[@]}" -d "$tmp/dl" "dm-tree==0.1.10" 2>&1 | grep -v "is ignored" || true

full=$(ls "$tmp"/dl/dm_control-1.0.52-*.whl)
"$PYTHON" - "$full" "$tmp/dm_control-1.0.52-py3-none-any.whl" <<'EOF'
"""Copy a dm_control wheel without the sub-packages the suite does not use; rewrite its RECORD."""
import sys
import zipfile

DROP = ("dm_control/locomotion/", "dm_control/suite/dog_assets/", "dm_control/manipulation/",
        "dm_control/composer/", "dm_control/entities/", "dm_control/viewer/", "dm_control/blender/",
        "dm_control/mujoco/testing/", "dm_control/suite/all_domains.png")
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    kept = [i for i in zin.infolist() if not i.filename.startswith(DROP)]
    for info in kept:
        data = zin.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if not line.startswith(DROP)).encode()
        zout.writestr(info, data)
print(f"slim dm_control wheel: kept {len(kept)} of {len(zin.infolist())} files")
EOF

# The slim wheel must still load and step a suite task (mujoco from the local environment).
"$PYTHON" -m pip install -q --no-deps --no-index --target "$tmp/site" "$tmp/dm_control-1.0.52-py3-none-any.whl" \
  "$tmp"/dl/dm_env-*.whl
MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONPATH="$tmp/site" "$PYTHON" -c "
import dm_control, numpy as np
from dm_control import suite
assert dm_control.__file__.startswith('$tmp/site'), dm_control.__file__
env = suite.load('walker', 'walk', task_kwargs={'random': 0})
env.reset(); env.step(np.zeros(6))
print('slim dm_control loads walker_walk')"

rm -f "$out"/dm_control-*.whl "$out"/dm_env-*.whl "$out"/dm_tree-*.whl
cp "$tmp/dm_control-1.0.52-py3-none-any.whl" "$tmp"/dl/dm_env-*.whl "$tmp"/dl/dm_tree-*.whl "$out"/
ls -l "$out"/dm_control-*.whl "$out"/dm_env-*.whl "$out"/dm_tree-*.whl
du -sh "$out"
