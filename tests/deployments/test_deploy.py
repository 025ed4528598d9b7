"""`p2m deploy` against a real Prefect server (the test harness's): pools, deployments, schedules, the UI form."""

import pytest
from p2m.deployments.deploy import deploy_all, deployment_specs, ensure_work_pools

from tests.conftest import EXAMPLE


def test_deploy_registers_pools_deployments_and_the_nightly_schedule(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client

    assert set(ensure_work_pools()) <= {"cpu", "gpu"}
    assert ensure_work_pools() == []  # idempotent
    ids = deploy_all(deployment_specs(str(EXAMPLE), str(tmp_path / "nightly")))
    assert set(ids) == {
        "p2m-pipeline/pipeline",
        "p2m-nightly/nightly",
        "p2m-index-refresh/nightly-index-refresh",
        "p2m-train-evaluate/gpu",
        "p2m-publish-demo/demo",
        "p2m-serve-student/serve",
    }
    with get_client(sync_client=True) as client:
        pipeline = client.read_deployment_by_name("p2m-pipeline/pipeline")
        nightly = client.read_deployment_by_name("p2m-nightly/nightly")
        index = client.read_deployment_by_name("p2m-index-refresh/nightly-index-refresh")
        gpu = client.read_deployment_by_name("p2m-train-evaluate/gpu")
    assert (pipeline.work_pool_name, gpu.work_pool_name) == ("cpu", "gpu")
    assert gpu.global_concurrency_limit.limit == 1  # one fine-tune per GPU at a time
    assert (
        nightly.schedules[0].schedule.cron == "0 2 * * *"
        and nightly.parameters["fresh_seed"] is True
        and not nightly.paused
    )
    assert index.paused  # no --index-out given: registered, but not scheduled blind
    # The UI's run form: typed fields with descriptions from the docstring.
    props = pipeline.parameter_openapi_schema["properties"]
    assert {
        "prompt_file",
        "out_dir",
        "num_examples",
        "datasets_dir",
        "eval_data",
        "model_size_cap_gb",
        "choose_dataset_in_ui",
    } <= set(props)
    assert "Examples to generate" in props["num_examples"]["description"]


def test_crash_detection_is_registered_once_with_three_heartbeats(prefect_harness):
    from p2m.deployments.deploy import CRASH_AUTOMATION, ensure_crash_detection
    from prefect.client.orchestration import get_client

    first = ensure_crash_detection()
    second = ensure_crash_detection()  # `p2m deploy` again replaces it
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(CRASH_AUTOMATION)
        for automation in found:
            client.delete_automation(automation.id)
    assert first != second and [str(a.id) for a in found] == [second]
    trigger = found[0].trigger
    assert (
        trigger.posture == "Proactive" and trigger.within.total_seconds() == 3 * 180
    )  # Prefect's default heartbeat: 180 s
    assert trigger.after == {"prefect.flow-run.heartbeat"} and "prefect.flow-run.Completed" in trigger.expect
    assert found[0].actions[0].state == "CRASHED"


def test_the_run_form_shows_the_settings_values_with_bounds_and_refuses_bad_ones(prefect_harness, monkeypatch):
    """The pipeline's form: numbers that set a setting show the value the settings give (not an
    `int | None` toggle set to None), with the setting's bounds; the server refuses a value out of
    bounds before any run starts. Deployments carry tags a team's UI can filter on."""
    import httpx
    from p2m.tasks.core.config import load_settings
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    monkeypatch.setenv("P2M_GENERATION__NUM_EXAMPLES", "40")  # where `p2m deploy` runs: the form shows 40
    ensure_work_pools()
    deploy_all(deployment_specs(), settings=load_settings())
    with get_client(sync_client=True) as client:
        pipeline = client.read_deployment_by_name("p2m-pipeline/pipeline")
        deployments = {d.name: d for d in client.read_deployments()}
    props = pipeline.parameter_openapi_schema["properties"]
    assert {k: props["num_examples"].get(k) for k in ("type", "default", "minimum", "maximum", "anyOf")} == {
        "type": "integer",
        "default": 40,
        "minimum": 0,
        "maximum": 100_000,
        "anyOf": None,
    }
    assert {k: props["model_size_cap_gb"].get(k) for k in ("type", "default", "exclusiveMinimum")} == {
        "type": "number",
        "default": 3.0,
        "exclusiveMinimum": 0,
    }
    assert props["overrides"]["type"] == "object" and props["overrides"]["default"] == {}
    assert props["prompt"]["type"] == "string" and "pasted" in props["prompt"]["description"]
    for path_field in ("prompt_file", "out_dir", "eval_data", "datasets_dir", "models_dir"):
        assert props[path_field]["type"] == "string" and "URL" in props[path_field]["description"], path_field
    assert not pipeline.parameter_openapi_schema.get("required") and pipeline.parameters == {"publish_demo": True}
    assert set(pipeline.tags) == {"p2m", "pipeline"} and set(deployments["gpu"].tags) == {"p2m", "train", "gpu"}
    assert all(
        "p2m" in d.tags for d in deployments.values() if d.name in ("pipeline", "nightly", "gpu", "demo", "serve")
    )
    nightly = deployments["nightly"].parameter_openapi_schema["properties"]
    assert nightly["num_examples"]["default"] == 40 and "anyOf" not in nightly["num_examples"]
    with pytest.raises(httpx.HTTPStatusError, match="minimum"):
        run_deployment("p2m-pipeline/pipeline", parameters={"prompt": "x", "num_examples": -1}, timeout=0)
