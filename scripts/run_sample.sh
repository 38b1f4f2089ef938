#!/usr/bin/env bash
# Install what is missing, then run the main job on the bundled Drosophila sample (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
unset QT_QPA_PLATFORM
exec xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/napari-casper run-sample --out "${1:-out/sample}"
