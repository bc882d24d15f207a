"""Tracking scenarios: experiments, runs, metrics, params, tags, batches, inputs (see README.md)."""

import time

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag

import sys

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__

from common import check, check_eq, check_ts, client, expect_error, main, name, now_ms


def tracking():
    c = client()

    # experiments
    e1, e2, e3 = name("track-1"), name("track-2"), name("track-3")
    id1 = c.create_experiment(e1, tags={"purpose": "test"})
    id2 = c.create_experiment(e2)
    id3 = c.create_experiment(e3)
    check(isinstance(id1, str) and id1 != "", "experiment id to be a non-empty string", id1)
    exp = c.get_experiment(id1)
    check_eq((exp.experiment_id, exp.name, exp.lifecycle_stage), (id1, e1, "active"), "get_experiment")
    check_eq(exp.tags.get("purpose"), "test", "experiment tag at create")
    check_eq(c.get_experiment_by_name(e2).experiment_id, id2, "get_experiment_by_name")
    check_eq(c.get_experiment_by_name(name("track-missing")), None, "get_experiment_by_name of a missing name")
    expect_error("RESOURCE_ALREADY_EXISTS", c.create_experiment, e1)
    like = "name LIKE '%s.track-%%'" % name("x")[: -len(".x")]
    found = sorted(e.name for e in c.search_experiments(filter_string=like))
    check_eq(found, [e1, e2, e3], "search_experiments name LIKE")
    check_eq([e.name for e in c.search_experiments(filter_string="name = '%s'" % e2)], [e2], "search_experiments name =")
    names, token, pages = [], None, 0
    while True:
        page = c.search_experiments(filter_string=like, max_results=2, page_token=token, order_by=["name ASC"])
        pages += 1
        names += [e.name for e in page]
        token = page.token
        if not token or pages > 10:
            break
    check_eq(names, [e1, e2, e3], "paged search_experiments (order, no gaps, no duplicates)")
    check_eq(pages, 2, "pages of 2 for 3 experiments")

    # runs
    t0 = now_ms()
    r = c.create_run(id1, run_name="first", tags={"team": "vision"})
    rid = r.info.run_id
    check_eq(r.info.status, "RUNNING", "new run status")
    check_eq(r.info.run_name, "first", "run_name at create")
    check_ts(r.info.start_time, "run start_time")
    got = c.get_run(rid)
    check_eq((got.info.run_id, got.info.experiment_id), (rid, id1), "get_run ids")
    check_eq(got.data.tags.get("team"), "vision", "run tag at create")
    check_eq(got.info.artifact_uri.startswith("mlflow-artifacts:"), True, "artifact_uri under mlflow-artifacts:")
    expect_error("RESOURCE_DOES_NOT_EXIST", c.get_run, "0" * 32)

    # metrics with steps, history
    for step, value in enumerate([0.1, 0.4, 0.5, 0.7, 0.9]):
        c.log_metric(rid, "acc", value, step=step, timestamp=t0 + step)
    hist = c.get_metric_history(rid, "acc")
    check_eq(sorted((m.step, m.value, m.timestamp) for m in hist),
             [(s, v, t0 + s) for s, v in enumerate([0.1, 0.4, 0.5, 0.7, 0.9])], "get_metric_history")
    check_eq(c.get_run(rid).data.metrics["acc"], 0.9, "latest metric value in run data")

    # params: re-logging the same value is fine, a different value is an error
    c.log_param(rid, "lr", "0.1")
    c.log_param(rid, "lr", "0.1")
    expect_error("INVALID_PARAMETER_VALUE", c.log_param, rid, "lr", "0.2")
    check_eq(c.get_run(rid).data.params["lr"], "0.1", "param after refused re-log")

    c.set_tag(rid, "phase", "train")
    c.log_batch(
        rid,
        metrics=[Metric("loss", 0.5, t0, 0), Metric("loss", 0.25, t0 + 1, 1)],
        params=[Param("epochs", "3"), Param("batch", "32")],
        tags=[RunTag("note", "batched")],
    )
    data = c.get_run(rid).data
    check_eq(data.metrics.get("loss"), 0.25, "metric from log_batch")
    check_eq((data.params.get("epochs"), data.params.get("batch")), ("3", "32"), "params from log_batch")
    check_eq((data.tags.get("phase"), data.tags.get("note")), ("train", "batched"), "tags from set_tag/log_batch")
    check_eq([m.value for m in sorted(c.get_metric_history(rid, "loss"), key=lambda m: m.step)], [0.5, 0.25], "loss history")
    # every latest metric comes back with its exact value, infinities included
    c.log_metric(rid, "peak", float("inf"))
    c.log_metric(rid, "precise", 0.1 + 0.2)
    check_eq(c.get_run(rid).data.metrics, {"acc": 0.9, "loss": 0.25, "peak": float("inf"), "precise": 0.1 + 0.2},
             "latest metrics in run data")

    # dataset input
    df = pd.DataFrame({"x": np.arange(5, dtype="float64"), "y": (np.arange(5) % 2).astype("float64")})
    ds = mlflow.data.from_pandas(df, name="toy", targets="y")
    with mlflow.start_run(run_id=rid):
        mlflow.log_input(ds, context="training")
    inputs = c.get_run(rid).inputs.dataset_inputs
    check_eq([(i.dataset.name, i.dataset.digest) for i in inputs], [("toy", ds.digest)], "logged dataset input")
    check_eq({t.key: t.value for t in inputs[0].tags}.get("mlflow.data.context"), "training", "dataset input context tag")

    # update: status, name, end time
    c.update_run(rid, status="RUNNING", name="renamed")
    check_eq(c.get_run(rid).info.run_name, "renamed", "run_name after update_run")
    end = now_ms()
    c.set_terminated(rid, status="FINISHED", end_time=end)
    info = c.get_run(rid).info
    check_eq((info.status, info.end_time), ("FINISHED", end), "status and end_time after set_terminated")

    # more runs to search
    r2 = c.create_run(id1, run_name="second").info.run_id
    c.log_metric(r2, "acc", 0.3)
    c.log_param(r2, "lr", "0.01")
    c.set_tag(r2, "team", "nlp")
    c.set_terminated(r2)
    r3 = c.create_run(id1, run_name="third").info.run_id
    c.log_metric(r3, "acc", 0.6)
    c.log_param(r3, "lr", "0.1")
    c.set_terminated(r3, status="FAILED")
    check_eq(c.get_run(r3).info.status, RunStatus.to_string(RunStatus.FAILED), "status FAILED")

    def ids(runs):
        return [x.info.run_id for x in runs]

    check_eq(sorted(ids(c.search_runs([id1], "metrics.acc > 0.5"))), sorted([rid, r3]), "search_runs metrics.acc > 0.5")
    check_eq(sorted(ids(c.search_runs([id1], "params.lr = '0.1'"))), sorted([rid, r3]), "search_runs params.lr = '0.1'")
    check_eq(ids(c.search_runs([id1], "tags.team = 'nlp'")), [r2], "search_runs tags.team = 'nlp'")
    check_eq(ids(c.search_runs([id1], order_by=["metrics.acc DESC"])), [rid, r3, r2], "search_runs order_by metrics.acc DESC")
    check_eq(ids(c.search_runs([id1], order_by=["metrics.acc ASC"])), [r2, r3, rid], "search_runs order_by metrics.acc ASC")
    seen, token, pages = [], None, 0
    while True:
        page = c.search_runs([id1], order_by=["metrics.acc DESC"], max_results=2, page_token=token)
        pages += 1
        seen += ids(page)
        token = page.token
        if not token or pages > 10:
            break
    check_eq(seen, [rid, r3, r2], "paged search_runs (order, no gaps, no duplicates)")
    check_eq(pages, 2, "pages of 2 for 3 runs")
    check_eq(c.search_runs([id2]), [], "search_runs of an empty experiment")


if __name__ == "__main__":
    main({"tracking": tracking})
