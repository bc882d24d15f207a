"""Model registry scenarios: registry, stages, stages-approved (see README.md)."""

import os
import tempfile
import time

import mlflow

import sys

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__

from common import (
    TARGET,
    CheckFailed,
    check,
    check_eq,
    check_ts,
    client,
    expect_error,
    experiment_id,
    main,
    name,
)


def logged_source(short):
    """A run that logged a small "model" directory; returns (run_id, source under the run's
    artifact URI), like the normal flow's model version source."""
    c = client()
    run = c.create_run(experiment_id("registry"), run_name=short)
    d = tempfile.mkdtemp()
    os.makedirs(os.path.join(d, "model"))
    with open(os.path.join(d, "model", "MLmodel"), "w") as f:
        f.write("flavors: {}\n")
    c.log_artifacts(run.info.run_id, os.path.join(d, "model"), "model")
    c.set_terminated(run.info.run_id)
    return run.info.run_id, run.info.artifact_uri.rstrip("/") + "/model"


def all_pages(fetch, max_results=2):
    """Pages through fetch(max_results, page_token); returns (items, number of pages)."""
    items, token, pages = [], None, 0
    while True:
        page = fetch(max_results, token)
        pages += 1
        check(len(page) <= max_results, "at most %d results per page" % max_results, len(page))
        items.extend(page)
        token = page.token
        if not token:
            return items, pages
        check(pages < 50, "paging to end within 50 pages")


def registry():
    c = client()
    a, b = name("reg-a"), name("reg-b")

    # create / get / duplicate / missing
    rm = c.create_registered_model(a, tags={"team": "vision"}, description="first")
    check_eq(rm.name, a, "created model name")
    check_ts(rm.creation_timestamp, "registered model creation_timestamp")
    check_ts(rm.last_updated_timestamp, "registered model last_updated_timestamp")
    got = c.get_registered_model(a)
    check_eq(got.name, a, "get_registered_model name")
    check_eq(got.description, "first", "description at create")
    check_eq(got.tags, {"team": "vision"}, "tags at create")
    expect_error("RESOURCE_ALREADY_EXISTS", c.create_registered_model, a)
    expect_error("RESOURCE_DOES_NOT_EXIST", c.get_registered_model, name("missing"))

    # update description, tags
    time.sleep(0.01)
    upd = c.update_registered_model(a, description="second")
    check_eq(upd.description, "second", "update_registered_model returned description")
    check_eq(c.get_registered_model(a).description, "second", "description after update")
    c.set_registered_model_tag(a, "stage", "dev")
    c.set_registered_model_tag(a, "team", "nlp")
    check_eq(c.get_registered_model(a).tags, {"team": "nlp", "stage": "dev"}, "tags after set")
    c.delete_registered_model_tag(a, "stage")
    check_eq(c.get_registered_model(a).tags, {"team": "nlp"}, "tags after delete")

    # versions: sources under a run's artifact URI
    run1, src1 = logged_source("reg-run1")
    run2, src2 = logged_source("reg-run2")
    v1 = c.create_model_version(a, src1, run_id=run1, description="v one")
    v2 = c.create_model_version(a, src2, run_id=run2, tags={"k": "v"})
    v3 = c.create_model_version(a, src2, run_id=run2)
    check_eq([v1.version, v2.version, v3.version], ["1", "2", "3"], "version numbers (strings)")
    check_eq(v1.source, src1, "version 1 source")
    check_eq(v1.run_id, run1, "version 1 run_id")
    check_eq(v1.current_stage, "None", "version 1 current_stage")
    check_eq(v1.status, "READY", "version 1 status")
    check_ts(v1.creation_timestamp, "version creation_timestamp")
    check_ts(v1.last_updated_timestamp, "version last_updated_timestamp")
    g = c.get_model_version(a, "1")
    check_eq((g.name, g.version, g.description, g.source), (a, "1", "v one", src1), "get_model_version 1")
    check_eq(c.get_model_version(a, "2").tags, {"k": "v"}, "version 2 tags at create")
    expect_error("RESOURCE_DOES_NOT_EXIST", c.get_model_version, a, "99")

    u = c.update_model_version(a, "2", description="v two")
    check_eq(u.description, "v two", "update_model_version returned description")
    check_eq(c.get_model_version(a, "2").description, "v two", "version 2 description after update")
    c.set_model_version_tag(a, "2", "quality", "good")
    check_eq(c.get_model_version(a, "2").tags, {"k": "v", "quality": "good"}, "version tags after set")
    c.delete_model_version_tag(a, "2", "k")
    check_eq(c.get_model_version(a, "2").tags, {"quality": "good"}, "version tags after delete")

    uri = c.get_model_version_download_uri(a, "1")
    if TARGET == "cairn":
        # Cairn serves a registered version from its own frozen manifest (docs/MLFLOW.md).
        ns, short = a.split(".", 1)
        check_eq(uri, "mlflow-artifacts:/_versions/%s/%s/1" % (ns, short), "get_model_version_download_uri of version 1")
    else:
        check_eq(uri, src1, "get_model_version_download_uri of version 1")

    # search versions
    vs = c.search_model_versions("name = '%s'" % a)
    check_eq(sorted(v.version for v in vs), ["1", "2", "3"], "search_model_versions name = ")
    vs = c.search_model_versions("run_id = '%s'" % run2)
    check_eq(sorted((v.name, v.version) for v in vs), [(a, "2"), (a, "3")], "search_model_versions run_id = ")
    vs = c.search_model_versions("name = '%s' AND version_number > 1" % a)
    check_eq(sorted(v.version for v in vs), ["2", "3"], "search_model_versions version_number > 1")
    items, pages = all_pages(
        lambda n, t: c.search_model_versions("name = '%s'" % a, max_results=n, page_token=t)
    )
    versions = [v.version for v in items]
    check_eq(sorted(versions), ["1", "2", "3"], "paged search_model_versions (no gaps, no duplicates)")
    check_eq(pages, 2, "pages of 2 for 3 versions")

    latest = c.get_latest_versions(a)
    check_eq([(v.version, v.current_stage) for v in latest], [("3", "None")], "get_latest_versions")

    # aliases
    c.set_registered_model_alias(a, "champion", "1")
    check_eq(c.get_model_version_by_alias(a, "champion").version, "1", "alias champion")
    c.set_registered_model_alias(a, "champion", "2")
    check_eq(c.get_model_version_by_alias(a, "champion").version, "2", "alias champion after move")
    c.set_registered_model_alias(a, "old", "1")
    check_eq(c.get_registered_model(a).aliases, {"champion": "2", "old": "1"}, "registered model aliases")
    check_eq(c.get_model_version(a, "2").aliases, ["champion"], "version 2 aliases")
    c.delete_registered_model_alias(a, "old")
    check_eq(c.get_registered_model(a).aliases, {"champion": "2"}, "aliases after delete")
    # MLflow answers a missing alias with INVALID_PARAMETER_VALUE (400), not RESOURCE_DOES_NOT_EXIST.
    expect_error("INVALID_PARAMETER_VALUE", c.get_model_version_by_alias, a, "old")

    # delete a version
    c.delete_model_version(a, "3")
    expect_error("RESOURCE_DOES_NOT_EXIST", c.get_model_version, a, "3")
    check_eq(sorted(v.version for v in c.search_model_versions("name = '%s'" % a)), ["1", "2"], "versions after delete")

    # search registered models: filters, order, paging
    c.create_registered_model(b, tags={"team": "vision"})
    for short in ("reg-c", "reg-d", "reg-e"):
        c.create_registered_model(name(short))
    like = "name LIKE '%s.%%'" % name("reg")[: -len(".reg")]
    mine = [name(s) for s in ("reg-a", "reg-b", "reg-c", "reg-d", "reg-e")]
    found = [m.name for m in c.search_registered_models(like, max_results=100)]
    check_eq(sorted(n for n in found if n in mine), sorted(mine), "search_registered_models LIKE prefix")
    check_eq([m.name for m in c.search_registered_models("name = '%s'" % b)], [b], "search name =")
    tagged = c.search_registered_models("%s AND tags.team = 'vision'" % like)
    check_eq([m.name for m in tagged], [b], "search tags.team = 'vision'")
    asc = [m.name for m in c.search_registered_models(like, order_by=["name ASC"], max_results=100)]
    check_eq(asc, sorted(asc), "order_by name ASC")
    desc = [m.name for m in c.search_registered_models(like, order_by=["name DESC"], max_results=100)]
    check_eq(desc, sorted(desc, reverse=True), "order_by name DESC")
    time.sleep(0.01)
    c.update_registered_model(name("reg-c"), description="touched last")
    recent = c.search_registered_models(like, order_by=["last_updated_timestamp DESC"], max_results=100)
    check_eq(recent[0].name, name("reg-c"), "first by last_updated_timestamp DESC")
    stamps = [m.last_updated_timestamp for m in recent]
    check_eq(stamps, sorted(stamps, reverse=True), "last_updated_timestamp DESC order")
    items, pages = all_pages(
        lambda n, t: c.search_registered_models(like, order_by=["name ASC"], max_results=n, page_token=t)
    )
    paged = [m.name for m in items]
    check_eq(paged, asc, "paged search_registered_models (order, no gaps, no duplicates)")
    check_eq(pages, (len(asc) + 1) // 2, "pages of 2")

    # rename keeps versions and aliases
    renamed = name("reg-renamed")
    c.rename_registered_model(a, renamed)
    check_eq(c.get_registered_model(renamed).name, renamed, "name after rename")
    expect_error("RESOURCE_DOES_NOT_EXIST", c.get_registered_model, a)
    check_eq(sorted(v.version for v in c.search_model_versions("name = '%s'" % renamed)), ["1", "2"], "versions after rename")
    check_eq(c.get_model_version(renamed, "1").name, renamed, "version's model name after rename")
    check_eq(c.get_model_version_by_alias(renamed, "champion").version, "2", "alias after rename")
    check_eq(c.get_registered_model(renamed).description, "second", "description after rename")

    # delete removes versions
    c.delete_registered_model(renamed)
    expect_error("RESOURCE_DOES_NOT_EXIST", c.get_registered_model, renamed)
    expect_error("RESOURCE_DOES_NOT_EXIST", c.get_model_version, renamed, "1")
    check_eq(c.search_model_versions("name = '%s'" % renamed), [], "versions of a deleted model")
    for short in ("reg-b", "reg-c", "reg-d", "reg-e"):
        c.delete_registered_model(name(short))
    check_eq([m.name for m in c.search_registered_models(like) if m.name in mine], [], "models after delete")


def stages():
    c = client()
    n = name("stages")
    c.create_registered_model(n)
    run1, src = logged_source("stages-run")
    c.create_model_version(n, src, run_id=run1)
    c.create_model_version(n, src, run_id=run1)
    if TARGET == "cairn":
        # Cairn gates promotions behind reviews.
        for stage in ("Staging", "Production"):
            expect_error(
                "PERMISSION_DENIED",
                c.transition_model_version_stage,
                n,
                "1",
                stage,
                contains=("approv", "review"),
            )
        check_eq(c.get_model_version(n, "1").current_stage, "None", "stage after refused transitions")
        return
    mv = c.transition_model_version_stage(n, "1", "Staging")
    check_eq(mv.current_stage, "Staging", "transition to Staging")
    mv = c.transition_model_version_stage(n, "1", "Production")
    check_eq(mv.current_stage, "Production", "transition to Production")
    mv = c.transition_model_version_stage(n, "2", "Production", archive_existing_versions=True)
    check_eq(mv.current_stage, "Production", "version 2 to Production")
    check_eq(c.get_model_version(n, "1").current_stage, "Archived", "version 1 archived by archive_existing_versions")
    latest = c.get_latest_versions(n, stages=["Production"])
    check_eq([v.version for v in latest], ["2"], "get_latest_versions Production")
    mv = c.transition_model_version_stage(n, "2", "Archived")
    check_eq(mv.current_stage, "Archived", "transition to Archived")
    c.delete_registered_model(n)


def stages_approved(model_name, version):
    """Cairn only: the version was approved natively (approved_prod) by the Rust test."""
    check_eq(TARGET, "cairn", "CAIRN_MLFLOW_TARGET for stages-approved")
    c = client()
    mv = c.transition_model_version_stage(model_name, version, "Production")
    check_eq(mv.current_stage, "Production", "transition of an approved version to Production")
    check_eq(c.get_model_version(model_name, version).current_stage, "Production", "current_stage after transition")
    check_eq(c.get_model_version_by_alias(model_name, "production").version, str(version), "alias production")
    mv = c.transition_model_version_stage(model_name, version, "Archived")
    check_eq(mv.current_stage, "Archived", "transition to Archived")
    check_eq(c.get_model_version(model_name, version).current_stage, "Archived", "current_stage after archiving")


if __name__ == "__main__":
    main({"registry": registry, "stages": stages, "stages-approved": stages_approved})
