"""Property tests of the HTTP service from its own OpenAPI document (schemathesis): no
request it accepts may produce a 5xx, and every response must match the schema."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

import cargohold
from cargohold.server import create_app

_tmp = Path(tempfile.mkdtemp(prefix="cargohold-schemathesis-"))
_hold = cargohold.open(
    f"memory://schemathesis-{uuid.uuid4().hex}",
    data_dir=_tmp,
    signal_handlers=False,
    token="schema-token",
)
_hold.put("videos/a.mp4", b"\x00" * 300_000, content_type="video/mp4")
_hold.put("notes/n.txt", b"hello", content_type="text/plain")
_hold.memo("sora", version="1").get_or_create({"prompt": "cat"}, lambda i, w: b"x")
app = create_app(_hold)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


# The checks the issue asks for: no 5xx, and every response (status code, content type,
# body, headers) matches the document. Not "positive data acceptance": keys have rules
# (no control characters, no '..') that the document states in words, not as a schema.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


# The service is private: every request carries the write token, so each route is
# exercised past the gate (tests/server/test_auth.py tries them without one).
AUTH = {"authorization": "Bearer schema-token"}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.headers = {**(case.headers or {}), **AUTH}
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code != 401, (case.path, response.text)
