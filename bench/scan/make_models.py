"""Writes the model directories bench/scan/run.sh pushes, each a realistic shape of about
SIZE_MIB MiB, with content that differs per seed (so nothing is deduplicated between runs):

  torch/pytorch_model.bin   a PyTorch zip checkpoint (data.pkl + stored tensor entries)
  joblib/model.joblib       a joblib dump of NumPy arrays (raw array bytes inside the pickle)
  pickle/state.pkl          an opcode-dense pickle (millions of small numbers): the scanner's worst case
  safetensors/model.safetensors
Each directory also holds a README.md and a LICENSE.

    python make_models.py OUT_DIR SIZE_MIB SEED
"""
import collections
import io
import os
import pickle
import sys
import types
import zipfile

import joblib
import numpy as np
from safetensors.numpy import save_file

out, size_mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(seed)
n_bytes = size_mib * 1024 * 1024


def fake(module, name):
    mod = sys.modules.setdefault(module, types.ModuleType(module))

    def f(*a):
        raise RuntimeError("never called")

    f.__module__, f.__qualname__, f.__name__ = module, name, name
    setattr(mod, name, f)
    return f


class Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def extras(d):
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write(f"# bench model {seed}\n")
    with open(os.path.join(d, "LICENSE"), "w") as f:
        f.write("                                 Apache License\n                           Version 2.0, January 2004\n")


def mkdir(name):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    extras(d)
    return d


# PyTorch zip: 200 tensors.
sys.modules.setdefault("torch", types.ModuleType("torch"))
rebuild = fake("torch._utils", "_rebuild_tensor_v2")
d = mkdir("torch")
tensors = 200
per = n_bytes // tensors
state = collections.OrderedDict((f"layer{i}.weight", Call(rebuild, str(i), 0, (per // 4,), (1,))) for i in range(tensors))
buf = io.BytesIO()
pickle.dump(state, buf, protocol=2)
with zipfile.ZipFile(os.path.join(d, "pytorch_model.bin"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", buf.getvalue())
    z.writestr("archive/version", "3\n")
    for i in range(tensors):
        z.writestr(f"archive/data/{i}", rng.bytes(per))

# joblib: 64 float32 arrays.
d = mkdir("joblib")
arrays = {f"coef_{i}": rng.random(n_bytes // 64 // 4, dtype=np.float32) for i in range(64)}
arrays["classes"] = np.array(["a", "b", "c"], dtype=object)
joblib.dump(arrays, os.path.join(d, "model.joblib"))

# Opcode-dense pickle: a quarter of the size, as lists of small ints and floats.
d = mkdir("pickle")
count = n_bytes // 4 // 9
values = rng.random(count).tolist()
with open(os.path.join(d, "state.pkl"), "wb") as f:
    pickle.dump({"values": values, "ids": list(range(count))}, f, protocol=4)

# safetensors: 32 float32 tensors.
d = mkdir("safetensors")
save_file({f"t{i}": rng.random(n_bytes // 32 // 4, dtype=np.float32) for i in range(32)}, os.path.join(d, "model.safetensors"))
