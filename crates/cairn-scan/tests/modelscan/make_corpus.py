"""Writes the corpus the modelscan comparison test scans: malicious files (prefix `evil_`)
built with Python's own pickle, joblib, NumPy and h5py, and benign ones (prefix `benign_`).
Nothing here is loaded or executed; the payloads only name the callables they would run.

    python make_corpus.py OUT_DIR
"""
import io
import json
import os
import pickle
import sys
import types
import zipfile

import h5py
import joblib
import numpy as np
from safetensors.numpy import save_file

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def path(name):
    return os.path.join(out, name)


class Call:
    """Pickles as a call of `fn(*args)`: what a hostile model file does on load."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def fake(module, name):
    """A function that pickles as `module.name` without importing `module` (which may not
    be installed here): pickle only records the qualified name."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        name_i = ".".join(parts[:i])
        if name_i not in sys.modules:
            sys.modules[name_i] = types.ModuleType(name_i)
        if i > 1:
            setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], sys.modules[name_i])
    mod = sys.modules[module]

    def f(*a):
        raise RuntimeError("never called")

    f.__module__, f.__qualname__, f.__name__ = module, name, name
    setattr(mod, name, f)
    return f


import builtins, operator, os as _os, runpy, shutil, socket, subprocess, webbrowser  # noqa: E401

evil = {
    "evil_os_system_p0.pkl": (Call(_os.system, "echo pwned"), 0),
    "evil_os_system_p2.pkl": (Call(_os.system, "echo pwned"), 2),
    "evil_os_system_p4.pkl": (Call(_os.system, "echo pwned"), 4),
    "evil_os_system_p5.pkl": (Call(_os.system, "echo pwned"), 5),
    "evil_eval.pkl": (Call(builtins.eval, "__import__('os').system('id')"), 4),
    "evil_exec.pickle": (Call(builtins.exec, "import os"), 3),
    "evil_getattr.pkl": (Call(builtins.getattr, Call(builtins.__import__, "os"), "system"), 4),
    "evil_subprocess.pkl": (Call(subprocess.Popen, ["id"]), 4),
    "evil_runpy.pkl": (Call(runpy.run_path, "/tmp/x.py"), 4),
    "evil_socket.pkl": (Call(socket.create_connection, ("127.0.0.1", 9)), 4),
    "evil_webbrowser.pkl": (Call(webbrowser.open, "http://127.0.0.1/"), 4),
    "evil_shutil.dill": (Call(shutil.rmtree, "/tmp/nothing-here"), 4),
    "evil_attrgetter.pkl": (Call(operator.attrgetter("system"), Call(builtins.__import__, "os")), 2),
    "evil_nested_pickle.pkl": (Call(pickle.loads, b"\x80\x04N."), 4),
    "evil_requests.pkl": (Call(fake("requests.api", "get"), "http://127.0.0.1/"), 4),
    "evil_aiohttp.data": (Call(fake("aiohttp.client", "request"), "GET", "http://127.0.0.1/"), 4),
}
for name, (obj, proto) in evil.items():
    with open(path(name), "wb") as f:
        pickle.dump({"weights": [1.0, 2.0], "hook": obj}, f, protocol=proto)

joblib.dump({"model": Call(_os.system, "id")}, path("evil_model.joblib"))
np.save(path("evil_objects.npy"), np.array([Call(_os.system, "id"), 1], dtype=object), allow_pickle=True)

# PyTorch: a zip checkpoint whose data.pkl calls os.system, and a legacy one (several pickles).
torch_utils = fake("torch._utils", "_rebuild_tensor_v2")
storage = fake("torch", "FloatStorage")


def torch_zip(name, payload):
    buf = io.BytesIO()
    pickle.dump(payload, buf, protocol=2)
    with zipfile.ZipFile(path(name), "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", b"\0" * 16)


torch_zip("evil_checkpoint.pt", {"state": Call(_os.system, "id")})
with open(path("evil_legacy.pth"), "wb") as f:
    for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(part, f, protocol=2)
    pickle.dump({"w": Call(_os.system, "id")}, f, protocol=2)

# Keras: Lambda layers in an HDF5 model config and in a .keras archive.
lambda_config = {
    "class_name": "Sequential",
    "config": {
        "name": "m",
        "layers": [
            {"class_name": "Dense", "config": {"name": "d", "units": 2}},
            {"class_name": "Lambda", "config": {"name": "backdoor", "function": ["4wEAAAAAAAAA", None, None]}},
        ],
    },
}
dense_config = {"class_name": "Sequential", "config": {"name": "m", "layers": [{"class_name": "Dense", "config": {"name": "d", "units": 2}}]}}
for name, config in (("evil_lambda.h5", lambda_config), ("benign_dense.h5", dense_config)):
    with h5py.File(path(name), "w") as h:
        h.attrs["model_config"] = json.dumps(config)
        h.attrs["keras_version"] = "2.15.0"
        h.create_dataset("model_weights/d/kernel", data=np.zeros((2, 2), dtype=np.float32))
for name, config in (("evil_lambda.keras", lambda_config), ("benign_dense.keras", dense_config)):
    with zipfile.ZipFile(path(name), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        z.writestr("model.weights.h5", b"")

# Benign files of the same formats.
with open(path("benign_state.pkl"), "wb") as f:
    pickle.dump({"weights": [0.5] * 10, "config": {"layers": 3}}, f, protocol=4)
import collections  # noqa: E402

with open(path("benign_ordered.pickle"), "wb") as f:
    pickle.dump(collections.OrderedDict(a=1, b=[1, 2]), f, protocol=2)
with open(path("benign_array.pkl"), "wb") as f:
    pickle.dump(np.arange(12, dtype=np.float32).reshape(3, 4), f, protocol=4)
joblib.dump({"coef": [0.1, 0.2], "intercept": 0.3, "classes": ["a", "b"]}, path("benign_model.joblib"))
arrays = {
    "w": np.arange(9, dtype=np.float64).reshape(3, 3),
    "i": np.arange(5, dtype=np.int32),
    "names": np.array(["a", None, "c"], dtype=object),
    "u": np.array(["x", "yz"]),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "scalar": np.float32(1.5),
    "again": np.ones(4),
}
joblib.dump(arrays, path("benign_arrays.joblib"))
joblib.dump(arrays, path("benign_compressed.joblib"), compress=3)
joblib.dump(arrays, path("benign_gzip.joblib"), compress=("gzip", 3))
joblib.dump({"w": np.ones(3), "o": np.array([Call(_os.system, "id")], dtype=object)}, path("evil_object_array.joblib"))
joblib.dump({"w": np.ones(3), "hook": Call(subprocess.run, ["id"])}, path("evil_compressed.joblib"), compress=3)
np.save(path("benign_weights.npy"), np.ones((4, 4), dtype=np.float32))
np.savez(path("benign_arrays.npz"), a=np.zeros(3), b=np.ones(2))
torch_zip("benign_checkpoint.pt", collections.OrderedDict(w=Call(torch_utils, Call(storage), 0, (2,), (1,))))
save_file({"w": np.zeros((2, 3), dtype=np.float32), "b": np.ones(3, dtype=np.float16)}, path("benign_model.safetensors"))
print("corpus written:", len(os.listdir(out)), "files")
