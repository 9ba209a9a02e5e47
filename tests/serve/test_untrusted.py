"""Third-party prompts in the registry are untrusted: a hostile template fails only its own task."""

from __future__ import annotations

import pytest

from spp.prompts.artifact import Artifact, ArtifactMeta


@pytest.mark.parametrize("template", ["{review:>300000000}", "{review.__class__}"])
def test_a_hostile_template_is_a_409_for_its_task_only(client, world, tiny_backbone, kit, unchecked_templates,
                                                         template):
    good = kit.make_artifact(tiny_backbone, "sentiment", seed=3)
    spec = dict(good.meta.task_spec, template=template)
    with unchecked_templates():  # published by an older spp, before templates were checked
        meta = ArtifactMeta(**{**good.meta.__dict__, "task_spec": spec})
        world.publish(Artifact(prompt=good.prompt, meta=meta), name="hostile")
    inputs = [{"review": "great movie"}] * 20
    r = client.post("/predict?task=hostile", json={"inputs": inputs})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "prompt_unavailable" and "template placeholder" in r.json()["detail"]
    for task in kit.TASKS:
        assert client.post(f"/predict?task={task}", json={"inputs": kit.INPUTS[task]}).status_code == 200
    listed = {t["name"]: t for t in client.get("/tasks").json()["tasks"]}
    assert listed["hostile"]["versions"][0]["servable"] is False
    assert "template placeholder" in listed["hostile"]["versions"][0]["reason"]
    assert listed["sentiment"]["versions"][0]["servable"] is True


def test_a_formatted_input_past_the_limit_is_413_before_it_is_built(client, world):
    limit = client.app.state.spp.settings.max_input_chars
    r = client.post("/predict?task=topic", json={"inputs": [{"review": "x" * limit}]})  # + "topic? " is too long
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert f"would be {limit + len('topic? ')} characters; the limit is {limit}" in r.json()["detail"]
    ok = client.post("/predict?task=topic", json={"inputs": [{"review": "x" * (limit - len("topic? "))}]})
    assert ok.status_code == 200, ok.text
