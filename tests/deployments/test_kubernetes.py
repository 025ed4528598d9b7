"""`p2m deploy --pool-type kubernetes`: the job templates, rendered as a worker renders them (no cluster here)."""

import contextlib
import json

import pytest
from p2m.deployments.kubernetes import GPU_RESOURCE, kubernetes_job_template, render_job

# What a kubernetes worker fills in for every run (prefect-kubernetes: name, command, env, labels).
RUN = {"name": "p2m-run-abc", "command": "prefect flow-run execute", "env": {"PREFECT_API_URL": "http://x/api"}}


def container(job: dict) -> dict:
    return job["job_manifest"]["spec"]["template"]["spec"]["containers"][0]


def test_the_gpu_pool_requests_gpus_and_shared_memory():
    job = render_job(kubernetes_job_template("registry/p2m-gpu:1", gpus=2), RUN)
    manifest, box = job["job_manifest"], container(job)
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    assert box["image"] == "registry/p2m-gpu:1" and box["args"] == RUN["command"] and box["env"] == RUN["env"]
    assert box["resources"] == {"requests": {GPU_RESOURCE: 2}, "limits": {GPU_RESOURCE: 2}}
    pod = manifest["spec"]["template"]["spec"]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    assert box["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert "{{" not in json.dumps(manifest)  # every placeholder filled or dropped


def test_a_deployments_job_variables_override_the_defaults():
    template = kubernetes_job_template("registry/p2m-gpu:1", gpus=1)
    job = render_job(template, RUN | {"gpu_count": 4, "image": "registry/p2m-gpu:2", "memory_limit": "32Gi"})
    box = container(job)
    assert box["resources"]["limits"] == {GPU_RESOURCE: 4, "memory": "32Gi"} and box["image"] == "registry/p2m-gpu:2"
    assert template["variables"]["properties"]["gpu_count"]["minimum"] == 1  # the UI's form refuses 0


def test_the_cpu_pool_asks_for_no_gpu():
    job = render_job(kubernetes_job_template("registry/p2m:1"), RUN)
    box = container(job)
    assert box["image"] == "registry/p2m:1" and GPU_RESOURCE not in json.dumps(job)
    assert "tolerations" not in job["job_manifest"]["spec"]["template"]["spec"]


def test_p2m_deploy_makes_kubernetes_pools_and_module_deployments(prefect_harness, monkeypatch, capsys):
    """The whole command against the test server: kubernetes pools with the templates above,
    deployments importing their flows from the installed package (nothing to pull into the pod),
    and the remote teacher's shared rate limits created. The process pools other tests use are put
    back afterwards."""
    from p2m.flows.cli.main import main
    from p2m.tasks.teacher.shared_limits import limit_names
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    def delete_pools():
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as client:
            for pool in ("cpu", "gpu"):
                with contextlib.suppress(ObjectNotFound):
                    client.delete_work_pool(pool)

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # a remote teacher: it gets shared limits
    monkeypatch.setenv("P2M_TEACHER_MODEL", "k8s-test-model")
    delete_pools()
    try:
        argv = ["deploy", "--pool-type", "kubernetes", "--image", "reg/p2m:1", "--gpu-image", "reg/p2m-gpu:1"]
        assert main([*argv, "--gpus", "2"]) == 0
        with get_client(sync_client=True) as client:
            gpu, cpu = client.read_work_pool("gpu"), client.read_work_pool("cpu")
            train = client.read_deployment_by_name("p2m-train-evaluate/gpu")
            requests_limit = client.read_global_concurrency_limit_by_name(
                limit_names("custom:k8s-test-model@http://127.0.0.1:9/v1")[0]
            )
        assert (gpu.type, cpu.type) == ("kubernetes", "kubernetes")
        assert container(render_job(gpu.base_job_template, RUN))["resources"]["limits"] == {GPU_RESOURCE: 2}
        assert container(render_job(cpu.base_job_template, RUN))["image"] == "reg/p2m:1"
        assert train.entrypoint == "p2m.flows.train_evaluate.train_evaluate_flow" and not train.pull_steps
        assert requests_limit.limit >= 1 and requests_limit.slot_decay_per_second > 0
        out = capsys.readouterr().out
        assert "work pools (kubernetes)" in out and "shared rate limit p2m-teacher-" in out
        # A process pool cannot become a kubernetes one (or back): said, not half done.
        monkeypatch.setattr("sys.argv", ["p2m"])
        assert main(["deploy"]) == 2
        assert "exists as a kubernetes pool" in capsys.readouterr().err
    finally:
        delete_pools()


@pytest.mark.parametrize("gpus", ["0", "-1"])
def test_a_pool_without_gpus_is_refused(gpus, capsys, monkeypatch):
    from p2m.flows.cli.main import main

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert main(["deploy", "--pool-type", "kubernetes", "--gpus", gpus]) == 2
    assert "--gpus" in capsys.readouterr().err
