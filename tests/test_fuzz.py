"""The API under schemathesis: requests generated from its own OpenAPI schema, valid and invalid,
never get a server error (5xx), and every response matches the schema and its documented status
codes. (The closing notes give a longer run: `schemathesis run` with 1,000 examples an operation.)"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tangshi.serve import create_app

pytestmark = pytest.mark.slow  # the app with the bundled model

app = create_app()
schema = schemathesis.openapi.from_dict(app.openapi())  # what /openapi.json serves, read without the lifespan:
schema.app = app  # no model loads while the tests are collected


@pytest.fixture(scope="module", autouse=True)
def started():
    with TestClient(app):  # runs the lifespan: the model loads, the writer thread starts
        yield


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case):
    case.call_and_validate(
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    )
