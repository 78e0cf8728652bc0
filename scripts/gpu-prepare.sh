#!/usr/bin/env bash
# Run here, before a GPU check: writes .whl/ (ignored by git) with a wheel of every runtime dependency of
# lai_bench that the bare, offline GPU machine lacks (scripts/gpu_wheels.py derives the list from pyproject.toml
# and scripts/gpu-device-packages.txt on each run), and .whl/COMMIT with the commit the check will measure.
# Prints what the device call needs: the carry list and the one command.
#
#   bash scripts/gpu-prepare.sh            # needs the package registry and lai_bench installed here
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 scripts/gpu_wheels.py --dest .whl "$@"
cat <<'MSG'
gpu-prepare: on the GPU machine, one call:
  carry:     [".whl"]
  command:   bash scripts/gpu-check.sh
  timeout_s: 420     (the check fits 6 minutes; the rest of the 15-minute lease leaves room for one rerun)
MSG
