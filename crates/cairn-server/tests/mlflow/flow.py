"""The end-to-end flow: train, log with registration, alias, load by alias and version (see README.md)."""

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import sys

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__

from common import check, check_eq, client, main, name

# Naming the requirements skips MLflow's requirement inference (a subprocess that reloads the
# model, ~10 s); the HTTP traffic is the same.
PIP = ["scikit-learn==%s" % sklearn.__version__]


def flow():
    c = client()
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(X, y)
    expected = model.predict(X)

    # 1. log with registered_model_name, alias, load by alias
    first = name("flow-iris")
    with mlflow.start_run() as run:
        mlflow.log_param("max_iter", 300)
        mlflow.log_metric("train_acc", float((expected == y).mean()))
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=first, pip_requirements=PIP)
    check_eq(str(info.registered_model_version), "1", "registered_model_version of log_model")
    v = c.get_model_version(first, "1")
    check_eq(v.run_id, run.info.run_id, "version 1 run_id")
    check_eq(v.status, "READY", "version 1 status")
    c.set_registered_model_alias(first, "champion", "1")
    loaded = mlflow.pyfunc.load_model("models:/%s@champion" % first)
    got = loaded.predict(X)
    check(np.array_equal(got, expected), "predictions of models:/%s@champion equal to the in-memory model's" % first, got[:10])

    # 2. log without registration, register from runs:/, load by version
    second = name("flow-iris2")
    model2 = LogisticRegression(max_iter=300, C=0.5).fit(X, y)
    expected2 = model2.predict_proba(X)
    with mlflow.start_run() as run2:
        mlflow.sklearn.log_model(model2, name="clf", pip_requirements=PIP)
    mv = mlflow.register_model("runs:/%s/clf" % run2.info.run_id, second)
    check_eq((mv.name, mv.version), (second, "1"), "register_model result")
    check_eq(mv.run_id, run2.info.run_id, "registered version run_id")
    check_eq(c.get_model_version(second, "1").run_id, run2.info.run_id, "get_model_version run_id")
    loaded2 = mlflow.sklearn.load_model("models:/%s/1" % second)
    check(np.array_equal(loaded2.predict_proba(X), expected2), "predict_proba of models:/%s/1 equal" % second)
    pyf = mlflow.pyfunc.load_model("models:/%s/1" % second)
    check(np.array_equal(pyf.predict(X), model2.predict(X)), "pyfunc predictions of models:/%s/1 equal" % second)


if __name__ == "__main__":
    main({"flow": flow})
