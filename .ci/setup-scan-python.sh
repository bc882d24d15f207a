#!/usr/bin/env bash
# Creates (or reuses) the Python venv of the supply-chain tests: modelscan pinned to one
# version, which artifact scanning is compared against (crates/cairn-scan/tests/modelscan.rs),
# with the libraries the test's corpus is written with (NumPy, h5py, joblib, safetensors);
# and cyclonedx-python-lib, whose CycloneDX 1.6 JSON schemas validate the ML-BOMs Cairn
# serves (crates/cairn-server/tests/scanning.rs).
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
if [ "$installed" != "$MODELSCAN_VERSION" ] || ! "$PY" -c "import numpy, h5py, joblib, safetensors, cyclonedx.validation.json, jsonschema" >/dev/null 2>&1; then
  echo "installing modelscan==$MODELSCAN_VERSION, numpy<2, h5py, joblib, safetensors, cyclonedx-python-lib (found: ${installed:-none})" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "modelscan==$MODELSCAN_VERSION" "numpy<2" h5py joblib safetensors \
    "cyclonedx-python-lib[json-validation]" >&2
fi

"$PY" -c "import modelscan, numpy, h5py, joblib, safetensors, cyclonedx.validation.json; assert numpy.__version__ < '2'" >&2
test -x "$VENV/bin/modelscan"
echo "$PY"
