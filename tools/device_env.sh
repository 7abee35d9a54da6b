# Source this on a GPU machine that has torch but no network: installs the wheels carried in .whl (gymnasium,
# mujoco, minari, zarr and their dependencies, made beforehand with `pip wheel -w .whl ...`) into /tmp/site and puts
# them and every package's src/ on PYTHONPATH (the machine has torch but no hatchling to install ours).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
_root=$(pwd)
export PYTHONPATH=/tmp/site:$_root/packages/gta-data/src:$_root/packages/gta-diffusion/src:$_root/packages/gta-rl/src:$_root/packages/gta-eval/src:$_root/packages/gta-pixel/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
# Command shims for the packages' CLIs (not installed here), for scripts that take GTA_BIN (tools/pipeline.sh,
# tools/reproduce.py uses the interpreter directly).
mkdir -p /tmp/gta-bin
for _pkg in data diffusion rl eval pixel; do
  printf '#!/bin/sh\nexec python3 -c "from gta_%s.cli import app; app()" "$@"\n' "$_pkg" > /tmp/gta-bin/gta-$_pkg
  chmod +x /tmp/gta-bin/gta-$_pkg
done
export GTA_BIN=/tmp/gta-bin
