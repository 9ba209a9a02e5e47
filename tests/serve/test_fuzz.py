"""Property-based requests against the app (hypothesis; test_schemathesis.py drives the schema).

Whatever the body, query or content type, the server answers a documented status with a
JSON error body, and never a 500.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

ALLOWED = {200, 404, 409, 413, 415, 422}
FIELDS = ["review", "a", "b", "comment", "inputs", "texts", ""]

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_maps = st.dictionaries(st.sampled_from(FIELDS), json_values | st.text(max_size=40), max_size=3)
valid_inputs = st.lists(st.fixed_dictionaries({"review": st.text(max_size=40), "a": st.text(max_size=20),
                                                "b": st.integers() | st.text(max_size=20)}), min_size=1, max_size=8)
bodies = st.one_of(
    st.fixed_dictionaries({"inputs": valid_inputs}),
    st.fixed_dictionaries({"inputs": st.lists(field_maps, max_size=70)}),
    st.fixed_dictionaries({"texts": st.lists(st.text(max_size=60), max_size=70)}),
    st.fixed_dictionaries({"texts": st.lists(json_values, max_size=5)}),
    st.dictionaries(st.sampled_from(["inputs", "texts", "extra"]), json_values, max_size=3),
    json_values,
)
refs = st.one_of(
    st.sampled_from(["sentiment", "topic@prod", "pair@1", "pair@latest"]),
    st.sampled_from(["nope", "topic@9", "topic@dev", "x@", "@", "", "a@b@c", "../x", "sentiment@0"]),
    st.text(max_size=12),
)


def _check(r) -> None:
    event(f"status {r.status_code}")  # --hypothesis-show-statistics shows the spread
    assert r.status_code in ALLOWED, (r.status_code, r.text)
    body = r.json()
    if r.status_code == 200:
        assert isinstance(body["predictions"], list) and body["prompt"].count("@") == 1
        for p in body["predictions"]:
            assert abs(sum(p["probabilities"].values()) - 1.0) < 1e-4
            assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
    else:
        assert body["status"] == r.status_code and body["error"] and body["detail"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task=refs, body=bodies)
def test_random_json_bodies_never_get_a_500(client, task, body):
    _check(client.post("/predict", params={"task": task}, json=body))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))
def test_random_bytes_never_get_a_500(client, raw, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/predict?task=sentiment", content=raw, headers=headers)
    _check(r)
    if raw:  # an empty body has no type to check: it is answered "the request body is empty" (422)
        assert (r.status_code == 415) == (content_type != "application/json")


def test_a_valid_body_generated_from_the_openapi_schema_is_answered(client):
    """The documented request schema admits the bodies the server answers with 200."""
    schema = client.get("/schema/openapi.json").json()
    ref = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    props = schema["components"]["schemas"][ref.split("/")[-1]]["properties"]
    assert set(props) == {"inputs", "texts"}
    r = client.post("/predict?task=sentiment", content=json.dumps({"inputs": [{"review": "great film"}]}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200
