"""Cairn-only authentication and authorisation scenarios (see README.md)."""

import sys

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__

from common import TARGET, check_eq, client, expect_error, main, name


def unauthenticated():
    """Run without credentials (or with a bad token): every call is refused."""
    check_eq(TARGET, "cairn", "CAIRN_MLFLOW_TARGET for unauthenticated")
    c = client()
    expect_error("UNAUTHENTICATED", c.search_registered_models)
    expect_error("UNAUTHENTICATED", c.get_registered_model, name("anything"))
    expect_error("UNAUTHENTICATED", c.create_registered_model, name("anything"))


def denied(hidden_model):
    """Run with the token of a user who can read but not write the prefix's namespace and
    cannot read the namespace of `hidden_model` (an existing model)."""
    check_eq(TARGET, "cairn", "CAIRN_MLFLOW_TARGET for denied")
    c = client()
    expect_error("PERMISSION_DENIED", c.create_registered_model, name("denied"))
    # A model the user cannot see does not exist for them: no PERMISSION_DENIED that would leak it.
    expect_error("RESOURCE_DOES_NOT_EXIST", c.get_registered_model, hidden_model)
    check_eq(c.search_registered_models("name = '%s'" % hidden_model), [], "search for the hidden model")
    expect_error("RESOURCE_DOES_NOT_EXIST", c.get_model_version, hidden_model, "1")


if __name__ == "__main__":
    main({"unauthenticated": unauthenticated, "denied": denied})
