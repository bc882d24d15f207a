#!/usr/bin/env bash
# Creates (or reuses) the Python venv the card consumer tests run against:
# huggingface_hub (ModelCard.load), jsonschema, jinja2 (ModelCard.from_template, for
# bench/card), and the Model Card Toolkit's v0.0.2 schema.
#
#   bash .ci/setup-card-python.sh          # prints the venv's python path on the last line
#   export CAIRN_TEST_PYTHON="$(bash .ci/setup-card-python.sh | tail -n1)"
#
# The venv lives in "${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}/venv-card". The MCT schema is
# extracted to "$VENV/share/mct/model_card.schema.json" (tests find it next to the python).
set -euo pipefail

CACHE_DIR="${CAIRN_CACHE_DIR:-$HOME/.cache/cairn}"
VENV="$CACHE_DIR/venv-card"
PY="$VENV/bin/python"
SCHEMA="$VENV/share/mct/model_card.schema.json"
SCHEMA_IN_WHEEL="model_card_toolkit/schema/v0.0.2/model_card.schema.json"

mkdir -p "$CACHE_DIR"
if [ ! -x "$PY" ]; then
  echo "creating $VENV" >&2
  python3 -m venv "$VENV"
fi

if ! "$PY" -c "import huggingface_hub, jsonschema, jinja2" >/dev/null 2>&1; then
  echo "installing huggingface_hub, jsonschema and jinja2 (for the benchmark's ModelCard.from_template)" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check huggingface_hub jsonschema jinja2 >&2
fi

if [ ! -s "$SCHEMA" ]; then
  mkdir -p "$(dirname "$SCHEMA")"
  # model-card-toolkit pins old TensorFlow-era dependencies that do not install on newer
  # Pythons; the schema file is all the tests need, so take it from the wheel directly.
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching the model-card-toolkit wheel for its v0.0.2 schema" >&2
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    model-card-toolkit -d "$tmp" >&2
  wheel="$(ls "$tmp"/model_card_toolkit-*.whl | head -n1)"
  "$PY" - "$wheel" "$SCHEMA_IN_WHEEL" "$SCHEMA" <<'PY'
import sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, open(dest, "wb") as out:
    out.write(z.read(member))
PY
fi

"$PY" -c "import huggingface_hub, jsonschema, json; json.load(open('$SCHEMA'))" >&2
echo "$PY"
