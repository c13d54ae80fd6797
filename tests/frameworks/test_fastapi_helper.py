"""cargohold.fastapi in-process: the lifespan opens and closes the Hold (or leaves a
caller's open), the dependency finds it, the service is mounted only while it is open."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import cargohold
import cargohold.fastapi
from cargohold import ConfigError, HoldClosed, InvalidInput
from cargohold.fastapi import HoldDep

SETTINGS = {"signal_handlers": False}


def _app(lifespan: object = None) -> FastAPI:
    app = FastAPI(lifespan=lifespan)  # type: ignore[arg-type]

    @app.put("/k/{key}")
    def put(key: str, hold: HoldDep) -> str:
        return hold.put(key, b"v").key

    @app.get("/k/{key}")
    def get(key: str, hold: HoldDep) -> str:
        return hold.get(key).decode()

    return app


def test_the_lifespan_opens_the_hold_and_closes_it(tmp_path: Path) -> None:
    app = _app(
        cargohold.fastapi.lifespan(
            remote="memory://fastapi-own", data_dir=tmp_path, mount="/storage", **SETTINGS
        )
    )
    with TestClient(app) as client:
        assert client.put("/k/a").json() == "a"
        assert client.get("/k/a").json() == "v"
        hold = app.state.cargohold_hold
        assert client.get("/storage/healthz").json()["ok"] is True
        assert client.get("/storage", follow_redirects=False).headers["location"] == "storage/"
    with pytest.raises(HoldClosed):
        hold.get("a")
    assert hold.remote.get("a") == b"v"  # the close flushed it
    with TestClient(app) as client:  # a second start: one mount, not two
        mounts = [r for r in app.router.routes if getattr(r, "path", None) == "/storage"]
        assert len(mounts) == 2  # the redirect and the service
        assert client.get("/k/a").json() == "v"


def test_a_hold_passed_in_is_left_open(tmp_path: Path) -> None:
    with cargohold.open("memory://fastapi-given", data_dir=tmp_path, **SETTINGS) as hold:
        with TestClient(_app(cargohold.fastapi.lifespan(hold))) as client:
            client.put("/k/b")
        assert hold.get("b") == b"v"


def test_a_factory_is_called_at_startup_and_closed(tmp_path: Path) -> None:
    opened: list[cargohold.Hold] = []

    def factory() -> cargohold.Hold:
        opened.append(cargohold.open("memory://fastapi-factory", data_dir=tmp_path, **SETTINGS))
        return opened[-1]

    app = _app(cargohold.fastapi.lifespan(factory))
    assert not opened
    with TestClient(app) as client:
        client.put("/k/c")
    with pytest.raises(HoldClosed):
        opened[0].get("c")


def test_a_mount_that_fails_closes_the_hold_the_lifespan_opened(tmp_path: Path) -> None:
    opened: list[cargohold.Hold] = []

    def factory() -> cargohold.Hold:
        opened.append(cargohold.open("memory://fastapi-badmount", data_dir=tmp_path, **SETTINGS))
        return opened[-1]

    app = _app(cargohold.fastapi.lifespan(factory, mount="/"))
    with pytest.raises(InvalidInput), TestClient(app):
        pass
    with pytest.raises(HoldClosed):  # not left open with its syncer and signal hooks
        opened[0].get("c")


def test_without_the_lifespan_the_dependency_says_what_to_add() -> None:
    with TestClient(_app()) as client, pytest.raises(ConfigError, match="lifespan"):
        client.get("/k/a")


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with cargohold.open("memory://fastapi-bad", data_dir=tmp_path, **SETTINGS) as hold:
        with pytest.raises(ConfigError):
            cargohold.fastapi.lifespan(hold, remote="memory://other")
        with pytest.raises(InvalidInput):
            cargohold.fastapi.service_routes(hold, "/")


def test_a_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if FastAPI were not installed
    monkeypatch.delitem(sys.modules, "cargohold.fastapi")
    with pytest.raises(ConfigError, match=r"cargohold\[fastapi\]"):
        importlib.import_module("cargohold.fastapi")
