#!/usr/bin/env bash
# Install everything napari-casper needs on a fresh Debian/Ubuntu machine: the system libraries for
# a headless OpenGL context (Xvfb + Mesa), a virtual environment in .venv, PyTorch (CPU build on
# machines without CUDA) and the package with its [all,testing] extras. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES="xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4 \
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 \
libxcb-shape0 libxcb-cursor0 libfontconfig1 libdbus-1-3"

missing=()
if command -v dpkg >/dev/null 2>&1; then
  for pkg in $SYSTEM_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.napari-casper-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  # the CPU build first: a bare 'torch' requirement can pull a multi-GB CUDA build
  .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q torch
fi
echo "setup: installing napari-casper[all,testing] into .venv"
.venv/bin/python -m pip install -q -e ".[all,testing]"
# napari's shape triangulation and scanpy's kernels are numba code compiled at first use (~25 s
# holding the GIL): compile them now, into numba's on-disk cache, not at a user's first click
echo "setup: compiling napari's and scanpy's numba code ahead (once, about a minute)"
.venv/bin/python -m napari_casper._widgets.common.compile_ahead
echo "$want" > "$stamp"
