#!/usr/bin/env bash
# Creates (or reuses) the Python venv the MLflow compatibility tests run the real MLflow
# client from (crates/cairn-server/tests/mlflow): mlflow pinned to one version, which brings
# scikit-learn, pandas and numpy.
#
#   bash .ci/setup-mlflow-python.sh          # prints the venv's python path on the last line
#   export CAIRN_TEST_MLFLOW_PYTHON="$(bash .ci/setup-mlflow-python.sh | tail -n1)"
#
# The venv lives in "${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/venv-mlflow". It is reinstalled
# when its mlflow is not the pinned version.
set -euo pipefail

MLFLOW_VERSION="3.17.2"
CACHE_DIR="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}"
VENV="$CACHE_DIR/venv-mlflow"
PY="$VENV/bin/python"

mkdir -p "$CACHE_DIR"
if [ ! -x "$PY" ]; then
  echo "creating $VENV" >&2
  python3 -m venv "$VENV"
fi

installed="$("$PY" -c "import importlib.metadata as m; print(m.version('mlflow'))" 2>/dev/null || true)"
if [ "$installed" != "$MLFLOW_VERSION" ]; then
  echo "installing mlflow==$MLFLOW_VERSION (found: ${installed:-none})" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check "mlflow==$MLFLOW_VERSION" scikit-learn pandas numpy >&2
fi

if ! "$PY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('sklearn', 'pandas', 'numpy', 'requests')))" >/dev/null 2>&1; then
  echo "installing scikit-learn, pandas and numpy" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check scikit-learn pandas numpy >&2
fi

"$PY" -c "import mlflow, sklearn, pandas, numpy, requests; assert mlflow.__version__ == '$MLFLOW_VERSION', mlflow.__version__" >&2
echo "$PY"
