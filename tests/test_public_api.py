"""The public surface is small and explicit, and the exception tree is what it says."""

from __future__ import annotations

import inspect
import pickle

import pytest

import cargohold
from cargohold import errors


def test_all_is_exactly_what_is_exported() -> None:
    public = {
        name
        for name, value in vars(cargohold).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public | {"__version__"} == set(cargohold.__all__)
    for name in cargohold.__all__:
        assert hasattr(cargohold, name)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.InvalidKey, ValueError),
        (errors.InvalidMetadata, ValueError),
        (errors.ConfigError, ValueError),
        (errors.NotFoundError, FileNotFoundError),
        (errors.AlreadyExists, FileExistsError),
        (errors.PermissionDenied, PermissionError),
        (errors.RemoteUnavailable, ConnectionError),
        (errors.TimedOut, TimeoutError),
        (errors.IntegrityError, OSError),
        (errors.StorageFull, OSError),
        (errors.HoldClosed, RuntimeError),
    ],
)
def test_each_error_is_also_the_builtin_callers_catch(error: type, builtin: type) -> None:
    exc = error("what went wrong", key="k", remote="memory://x", hint="how to fix it")
    assert isinstance(exc, errors.CargoholdError)
    assert isinstance(exc, builtin)
    assert str(exc) == "what went wrong: how to fix it"
    assert (exc.key, exc.remote, exc.hint) == ("k", "memory://x", "how to fix it")


def test_conflicts_share_a_base() -> None:
    assert issubclass(errors.AlreadyExists, errors.ConflictError)
    assert issubclass(errors.PreconditionFailed, errors.ConflictError)


def test_every_error_is_documented_in_the_tree() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        assert name in doc, f"{name} is missing from the tree in errors.py's docstring"


def test_errors_survive_pickling() -> None:
    # They cross process boundaries (worker pools, multiprocessing builds).
    exc = errors.NotFoundError("no object 'a'", key="a", remote="memory://x")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is errors.NotFoundError
    assert (str(again), again.key, again.remote) == (str(exc), "a", "memory://x")


def test_py_typed_ships() -> None:
    from importlib.resources import files

    assert files("cargohold").joinpath("py.typed").is_file()
