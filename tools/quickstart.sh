#!/usr/bin/env bash
# Install the project into .venv and run the GTA pipeline on the small embedded default (out/quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
bash tools/pipeline.sh "${1:-out/quickstart}"
