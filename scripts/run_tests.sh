#!/usr/bin/env bash
# Install what is missing, lint with ruff, then run the whole test suite (GUI tests under Xvfb via pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check src tests benchmarks docs scripts
unset QT_QPA_PLATFORM  # offscreen has no GL context; pytest-xvfb provides a real X display
exec .venv/bin/python -m pytest "$@"
