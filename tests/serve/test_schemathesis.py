"""schemathesis against the live OpenAPI schema of a real server on 127.0.0.1.

Every operation of /schema/openapi.json, cases generated from the schema (valid and invalid
bodies, queries, headers), each answer run through schemathesis' checks: no 5xx, status codes
and bodies as documented, invalid data refused. The example count is bounded for CI.
"""

from __future__ import annotations

import os
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from spp.serve.app import REF_PATTERN

# bounded for CI; SPP_SCHEMATHESIS_EXAMPLES=2000 fuzzes deeper by hand (a CI run once found a bug at 80)
MAX_EXAMPLES = int(os.environ.get("SPP_SCHEMATHESIS_EXAMPLES", "80"))
# Schema-violating requests must be refused with one of these. schemathesis' default list
# lacks 413, which the server answers (as documented) for a text over maxLength; 5xx is
# dropped from the list on purpose: a 5xx is never a valid refusal here.
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}})


@pytest.fixture
def live_schema(world, make_settings, run_uvicorn, kit):
    # small limits: generated bodies stay cheap to score, and the limits are in the schema too
    url, *_ = run_uvicorn(make_settings(port=kit.free_port(), log_level="warning", max_inputs=8, max_input_chars=256))
    return schemathesis.openapi.from_url(f"{url}/schema/openapi.json", config=CONFIG)


schema = schemathesis.pytest.from_fixture("live_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_every_operation_answers_as_documented(case):
    task = (case.query or {}).get("task")
    if case.path == "/predict" and isinstance(case.body, dict) and "texts" in case.body and isinstance(task, str) \
            and re.fullmatch(REF_PATTERN, task):
        # Generated names are unknown (404); texts need no template fields, so a served task
        # takes the generated texts through tokenizer, batcher and model.
        case.query = {**case.query, "task": "sentiment@prod"}
    case.call_and_validate(timeout=30)


KEY = "schemathesis-key-0123456789abcdef"


@pytest.fixture
def secured_schema(world, make_settings, run_uvicorn, kit):
    url, *_ = run_uvicorn(make_settings(port=kit.free_port(), log_level="warning", max_inputs=8, max_input_chars=256,
                                        api_keys=KEY))
    return schemathesis.openapi.from_url(f"{url}/schema/openapi.json", config=CONFIG)


secured = schemathesis.pytest.from_fixture("secured_schema")


@secured.parametrize()
@settings(max_examples=MAX_EXAMPLES // 4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_with_api_keys_every_operation_answers_as_documented(case):
    """The same with keys on: the schema declares bearer auth, and schemathesis' ignored_auth
    check replays each authenticated request without its key and expects a 401."""
    case.call_and_validate(timeout=30, headers={"Authorization": f"Bearer {KEY}"})
