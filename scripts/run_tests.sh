#!/usr/bin/env bash
# Install what is missing, lint with ruff, then run the whole test suite (GUI tests under Xvfb via pytest-xvfb).
# With no arguments the suite runs in two passes: the tests that drive a viewer or time a latency
# (markers gui, serial; not the viewer tests marked untimed) one at a time, the failed ones of those
# once more, then the rest side by side on every core (pytest-xdist, a test file per worker). With arguments, they are passed to one
# plain pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check src tests benchmarks docs scripts
unset QT_QPA_PLATFORM  # offscreen has no GL context; pytest-xvfb provides a real X display
# NAPARI_CASPER_TRACE_STALLS=1 makes a GUI test that stalls print where the GUI thread spent the time
# (tests/gui_checks.Heartbeat samples every thread's stack from a helper thread). Off by default: that
# sampling once crashed the interpreter (SIGSEGV while reading another thread's frames during a Mesa
# shader link), so turn it on only to diagnose a stall.
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
status=0
echo "== pass 1 of 2: viewer and latency tests, one at a time"
if ! .venv/bin/python -m pytest -q -rs -m "(gui or serial) and not untimed"; then
  # GUI stalls and Cancel latencies are wall-clock measurements: on a shared 2-core machine one can
  # land just over its limit by chance. The failed tests run once more; a real stall fails again.
  echo "== pass 1: the failed tests once more (their first failure is printed above)"
  .venv/bin/python -m pytest -q -rs -m "(gui or serial) and not untimed" --last-failed --last-failed-no-failures none || status=$?
fi
echo "== pass 2 of 2: the other tests, side by side"
.venv/bin/python -m pytest -q -rs -m "(not gui and not serial) or untimed" -n auto --dist loadfile || status=$((status > 0 ? status : $?))
exit $status
