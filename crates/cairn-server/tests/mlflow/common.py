"""Shared helpers for the MLflow client scenarios (see README.md).

Environment:
  MLFLOW_TRACKING_URI                      the server (Cairn or a real `mlflow server`)
  MLFLOW_TRACKING_TOKEN                    bearer token (or MLFLOW_TRACKING_USERNAME/PASSWORD)
  CAIRN_MLFLOW_PREFIX                      unique name prefix; models are "<prefix>.<name>"
  CAIRN_MLFLOW_TARGET                      "mlflow" or "cairn" (where Cairn intentionally differs)
"""

import hashlib
import os
import sys
import time
import traceback
import warnings
from urllib.parse import urlparse

# The stage APIs are deprecated; the scenarios use them on purpose.
warnings.filterwarnings("ignore", category=FutureWarning)
# Fail fast instead of retrying with backoff for minutes when the server answers 5xx.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
# Keep stdout to the scenario's own "ok <scenario>" line (no "View run at" links).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import mlflow  # noqa: E402
from mlflow.exceptions import MlflowException, RestException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI", "").rstrip("/")
PREFIX = os.environ.get("CAIRN_MLFLOW_PREFIX", "t%d" % int(time.time()))
TARGET = os.environ.get("CAIRN_MLFLOW_TARGET", "mlflow")
if TARGET not in ("mlflow", "cairn"):
    sys.exit("CAIRN_MLFLOW_TARGET must be 'mlflow' or 'cairn', not %r" % TARGET)


class CheckFailed(Exception):
    pass


def check(cond, expected, got=None):
    """Fails the scenario with "expected ..., got ..." unless cond holds."""
    if not cond:
        raise CheckFailed("expected %s; got %r" % (expected, got))


def check_eq(got, want, what):
    if got != want:
        raise CheckFailed("%s: expected %r; got %r" % (what, want, got))


def name(short):
    """A registered model (or experiment) name in this run's prefix: "<prefix>.<short>"."""
    return "%s.%s" % (PREFIX, short)


def client():
    return MlflowClient()


def expect_error(code, fn, *args, contains=None, **kwargs):
    """Calls fn and requires a RestException with error_code `code` (a str or a tuple of
    accepted codes); returns the exception. `contains`: substrings, one of which the
    message must contain (case-insensitive)."""
    codes = (code,) if isinstance(code, str) else tuple(code)
    what = getattr(fn, "__name__", repr(fn))
    try:
        result = fn(*args, **kwargs)
    except MlflowException as e:
        got = getattr(e, "error_code", None)
        if got not in codes:
            raise CheckFailed(
                "%s%r: expected error_code %s; got %s: %s" % (what, args, "/".join(codes), got, e.message)
            )
        if contains and not any(c.lower() in str(e.message).lower() for c in contains):
            raise CheckFailed(
                "%s%r: expected a message mentioning %s; got %r" % (what, args, " or ".join(contains), e.message)
            )
        return e
    raise CheckFailed("%s%r: expected error %s; it succeeded and returned %r" % (what, args, "/".join(codes), result))


def now_ms():
    return int(time.time() * 1000)


def check_ts(ts, what):
    """A timestamp must be an int of milliseconds within a minute of now."""
    check(isinstance(ts, int) and not isinstance(ts, bool), "%s to be an int (ms)" % what, ts)
    check(abs(now_ms() - ts) < 60_000, "%s within a minute of now (%d)" % (what, now_ms()), ts)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_hashes(root):
    """{relative posix path: sha256} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root).replace(os.sep, "/")] = sha256_file(p)
    return out


def auth_headers():
    """The headers the MLflow client would send, for the few raw `requests` calls."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": "Bearer %s" % token}
    user, pw = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user is not None and pw is not None:
        import base64

        return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()}
    return {}


def artifact_root_path(artifact_uri):
    """'mlflow-artifacts:/0/<run>/artifacts' -> '0/<run>/artifacts' (the path the
    /api/2.0/mlflow-artifacts/artifacts endpoints take)."""
    parsed = urlparse(artifact_uri)
    check(parsed.scheme == "mlflow-artifacts", "an mlflow-artifacts: artifact URI", artifact_uri)
    return parsed.path.lstrip("/")


def experiment_id(short):
    """Creates (or reuses) the experiment "<prefix>.<short>" and returns its id."""
    c = client()
    exp = c.get_experiment_by_name(name(short))
    return exp.experiment_id if exp else c.create_experiment(name(short))


def main(scenarios):
    """Runs the scenario named by argv[1] (extra argv are passed to it)."""
    if len(sys.argv) < 2 or sys.argv[1] not in scenarios:
        sys.exit("usage: %s <%s> [args...]" % (os.path.basename(sys.argv[0]), "|".join(sorted(scenarios))))
    scenario = sys.argv[1]
    try:
        check(TRACKING_URI != "", "MLFLOW_TRACKING_URI to be set")
        scenarios[scenario](*sys.argv[2:])
    except CheckFailed as e:
        print("FAIL %s: %s" % (scenario, e), file=sys.stderr)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        print("FAIL %s: unexpected exception (above)" % scenario, file=sys.stderr)
        sys.exit(1)
    print("ok %s" % scenario)
    sys.stdout.flush()
