#!/usr/bin/env bash
# Creates (or reuses) the Python venv the artifact-scanning comparison test runs modelscan
# from (crates/cairn-scan/tests/modelscan.rs): modelscan pinned to one version, with the
# libraries the test's corpus is written with (NumPy, h5py, joblib, safetensors).
#
#   bash .ci/setup-scan-python.sh          # prints the venv's python path on the last line
#   export CAIRN_TEST_SCAN_PYTHON="$(bash .ci/setup-scan-python.sh | tail -n1)"
#
# The venv lives in "${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/venv-scan". NumPy stays below 2:
# modelscan 0.8.8 reads .npy headers through a NumPy function that NumPy 2 removed.
set -euo pipefail

MODELSCAN_VERSION="0.8.8"
CACHE_DIR="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}"
VENV="$CACHE_DIR/venv-scan"
PY="$VENV/bin/python"

mkdir -p "$CACHE_DIR"
if [ ! -x "$PY" ]; then
  echo "creating $VENV" >&2
  python3 -m venv "$VENV"
fi

installed="$("$PY" -c "import importlib.metadata as m; print(m.version('modelscan'))" 2>/dev/null || true)"
if [ "$installed" != "$MODELSCAN_VERSION" ] || ! "$PY" -c "import numpy, h5py, joblib, safetensors" >/dev/null 2>&1; then
  echo "installing modelscan==$MODELSCAN_VERSION, numpy<2, h5py, joblib, safetensors (found: ${installed:-none})" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "modelscan==$MODELSCAN_VERSION" "numpy<2" h5py joblib safetensors >&2
fi

"$PY" -c "import modelscan, numpy, h5py, joblib, safetensors; assert numpy.__version__ < '2'" >&2
test -x "$VENV/bin/modelscan"
echo "$PY"
