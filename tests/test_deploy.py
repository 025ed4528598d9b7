"""`p2m deploy` against a real Prefect server (the test harness's): pools, deployments, schedules, the UI form."""

from p2m.deployments.deploy import deploy_all, deployment_specs, ensure_work_pools
from tests.conftest import EXAMPLE


def test_deploy_registers_pools_deployments_and_the_nightly_schedule(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client

    assert set(ensure_work_pools()) <= {"cpu", "gpu"}
    assert ensure_work_pools() == []  # idempotent
    ids = deploy_all(deployment_specs(str(EXAMPLE), str(tmp_path / "nightly")))
    assert set(ids) == {"p2m-pipeline/pipeline", "p2m-nightly/nightly", "p2m-index-refresh/nightly-index-refresh",
                        "p2m-train-evaluate/gpu", "p2m-publish-demo/demo", "p2m-serve-student/serve"}
    with get_client(sync_client=True) as client:
        pipeline = client.read_deployment_by_name("p2m-pipeline/pipeline")
        nightly = client.read_deployment_by_name("p2m-nightly/nightly")
        index = client.read_deployment_by_name("p2m-index-refresh/nightly-index-refresh")
        gpu = client.read_deployment_by_name("p2m-train-evaluate/gpu")
    assert (pipeline.work_pool_name, gpu.work_pool_name) == ("cpu", "gpu")
    assert gpu.global_concurrency_limit.limit == 1  # one fine-tune per GPU at a time
    assert nightly.schedules[0].schedule.cron == "0 2 * * *" and nightly.parameters["fresh_seed"] is True and not nightly.paused
    assert index.paused  # no --index-out given: registered, but not scheduled blind
    # The UI's run form: typed fields with descriptions from the docstring.
    props = pipeline.parameter_openapi_schema["properties"]
    assert {"prompt_file", "out_dir", "num_examples", "datasets_dir", "eval_data", "model_size_cap_gb", "choose_dataset_in_ui"} <= set(props)
    assert "Examples to generate" in props["num_examples"]["description"]


def test_crash_detection_is_registered_once_with_three_heartbeats(prefect_harness):
    from prefect.client.orchestration import get_client

    from p2m.deployments.deploy import CRASH_AUTOMATION, ensure_crash_detection

    first = ensure_crash_detection()
    second = ensure_crash_detection()  # `p2m deploy` again replaces it
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(CRASH_AUTOMATION)
        for automation in found:
            client.delete_automation(automation.id)
    assert first != second and [str(a.id) for a in found] == [second]
    trigger = found[0].trigger
    assert trigger.posture == "Proactive" and trigger.within.total_seconds() == 3 * 180  # Prefect's default heartbeat: 180 s
    assert trigger.after == {"prefect.flow-run.heartbeat"} and "prefect.flow-run.Completed" in trigger.expect
    assert found[0].actions[0].state == "CRASHED"
