"""Artifact scenarios through the mlflow-artifacts proxy (see README.md)."""

import http.client
import os
import random
import tempfile
from urllib.parse import quote, urlsplit

import mlflow
import requests

import sys

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__

from common import (
    PREFIX,
    TRACKING_URI,
    artifact_root_path,
    auth_headers,
    check,
    check_eq,
    client,
    experiment_id,
    main,
    tree_hashes,
)

ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def raw_request(method, path, body=b""):
    """Sends `path` byte-for-byte (no dot-segment normalisation, unlike requests/urllib3)."""
    u = urlsplit(TRACKING_URI)
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(u.hostname, u.port, timeout=30)
    headers = {"Content-Length": str(len(body)), "Content-Type": "application/octet-stream"}
    headers.update(auth_headers())
    conn.request(method, u.path.rstrip("/") + path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def list_names(run_id, path=None):
    return {f.path: (f.is_dir, f.file_size) for f in client().list_artifacts(run_id, path)}


def artifacts():
    c = client()
    rng = random.Random(20240611)
    src = tempfile.mkdtemp()
    files = {
        "tree/readme.txt": b"hello artifacts\n",
        "tree/nested/deeper/data.bin": rng.randbytes(70_000),
        "tree/nested/with space.txt": b"a file with a space in its name\n",
        "tree/empty.txt": b"",
    }
    for rel, data in files.items():
        write(os.path.join(src, *rel.split("/")), data)
    big = os.path.join(src, "big", "big.bin")
    write(big, rng.randbytes(8 * 1024 * 1024 + 123))
    single = os.path.join(src, "single.json")
    write(single, b'{"k": "v"}')

    run = c.create_run(experiment_id("artifacts"), run_name="artifacts")
    rid = run.info.run_id
    c.log_artifacts(rid, os.path.join(src, "tree"), "tree")
    c.log_artifact(rid, single)
    c.log_artifact(rid, big, "big")
    c.set_terminated(rid)

    # listings
    check_eq(list_names(rid), {"tree": (True, None), "big": (True, None), "single.json": (False, 10)}, "root listing")
    listed = list_names(rid, "tree")
    # MLflow leaves file_size out for an empty file (proto3 default), so the client reads None.
    check(listed.get("tree/empty.txt") in ((False, 0), (False, None)), "tree/empty.txt as (False, 0 or None)", listed)
    listed.pop("tree/empty.txt", None)
    check_eq(
        listed,
        {"tree/readme.txt": (False, len(files["tree/readme.txt"])), "tree/nested": (True, None)},
        "listing of tree/",
    )
    check_eq(
        list_names(rid, "tree/nested"),
        {"tree/nested/deeper": (True, None), "tree/nested/with space.txt": (False, len(files["tree/nested/with space.txt"]))},
        "listing of tree/nested/",
    )
    check_eq(list_names(rid, "big"), {"big/big.bin": (False, os.path.getsize(big))}, "listing of big/")

    # downloads, byte for byte
    dst = tempfile.mkdtemp()
    p = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="tree/nested/with space.txt", dst_path=dst)
    check_eq(tree_hashes(os.path.dirname(p)).get("with space.txt"), tree_hashes(os.path.join(src, "tree", "nested"))["with space.txt"], "single file download")
    dst = tempfile.mkdtemp()
    p = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="tree", dst_path=dst)
    check_eq(tree_hashes(p), tree_hashes(os.path.join(src, "tree")), "directory download (sha256 of every file)")
    dst = tempfile.mkdtemp()
    p = mlflow.artifacts.download_artifacts(artifact_uri="runs:/%s/big/big.bin" % rid, dst_path=dst)
    check_eq(tree_hashes(os.path.dirname(p)), tree_hashes(os.path.dirname(big)), "8 MB download via runs:/ URI")
    dst = tempfile.mkdtemp()
    p = mlflow.artifacts.download_artifacts(artifact_uri=run.info.artifact_uri + "/single.json", dst_path=dst)
    with open(p, "rb") as f:
        check_eq(f.read(), b'{"k": "v"}', "download via the run's artifact URI")

    # path traversal is refused and writes nothing
    root = artifact_root_path(run.info.artifact_uri)  # e.g. "0/<run>/artifacts"
    exp_part = root.split("/")[0]
    marker = "cairn-traversal-%s" % PREFIX
    attempts = [
        "%s/%s/../../%s" % (ARTIFACTS_API, exp_part, marker),
        "%s/%s/../../../%s" % (ARTIFACTS_API, root, marker),
        "%s/%s/%%2e%%2e/%%2e%%2e/%s" % (ARTIFACTS_API, exp_part, marker),
        "%s/%s/%%2E%%2E%%2F%%2E%%2E%%2F%%2E%%2E%%2F%s" % (ARTIFACTS_API, root, marker),
        "%s/%s/..%%2f..%%2f..%%2f%s" % (ARTIFACTS_API, root, marker),
        "%s/%s/%%2e%%2e%%2f%%2e%%2e%%2f%%2e%%2e%%2f%%2e%%2e%%2f%s" % (ARTIFACTS_API, root, marker),
    ]
    for path in attempts:
        status, body = raw_request("PUT", path, b"should not be written")
        check(400 <= status < 500, "PUT %s to be refused with a 4xx" % path, (status, body[:200]))
    for path in attempts:
        status, body = raw_request("GET", path)
        check(status != 200 or b"should not be written" not in body, "GET %s not to find the payload" % path, (status, body[:200]))
    for listed in (None, "tree"):
        names = [os.path.basename(n) for n in list_names(rid, listed)]
        check(marker not in names, "no %s in the run's listing" % marker, names)
    check_eq(list_names(rid), {"tree": (True, None), "big": (True, None), "single.json": (False, 10)}, "root listing after the traversal attempts")

    # deleting an artifact through the mlflow-artifacts DELETE endpoint
    url = "%s%s/%s/%s" % (TRACKING_URI, ARTIFACTS_API, root, quote("tree/nested/with space.txt"))
    resp = requests.delete(url, headers=auth_headers(), timeout=30)
    check(resp.status_code == 200, "DELETE of an artifact to answer 200", (resp.status_code, resp.text[:300]))
    check_eq(list_names(rid, "tree/nested"), {"tree/nested/deeper": (True, None)}, "listing after DELETE")


def multipart():
    """A 12 MB file through MLflow's proxied multipart upload (5 MB parts sent to the signed
    part URLs the server hands out), downloaded back byte for byte."""
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] = "true"
    os.environ["MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE"] = str(5 * 1024 * 1024)
    os.environ["MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE"] = str(5 * 1024 * 1024)
    c = client()
    exp = experiment_id("multipart")
    rid = c.create_run(exp).info.run_id
    src = tempfile.mkdtemp()
    big = os.path.join(src, "parts", "big12.bin")
    write(big, random.Random(7).randbytes(12 * 1024 * 1024 + 7))
    c.log_artifact(rid, big, "parts")
    check_eq(list_names(rid, "parts"), {"parts/big12.bin": (False, os.path.getsize(big))}, "listing after the multipart upload")
    dst = tempfile.mkdtemp()
    p = mlflow.artifacts.download_artifacts(artifact_uri="runs:/%s/parts/big12.bin" % rid, dst_path=dst)
    check_eq(tree_hashes(os.path.dirname(p)), tree_hashes(os.path.dirname(big)), "12 MB file after a multipart upload")


if __name__ == "__main__":
    main({"artifacts": artifacts, "multipart": multipart})
