"""Kubernetes work pools (`p2m deploy --pool-type kubernetes`): each flow run a Job in the cluster.

A Kubernetes worker (`prefect worker start --pool cpu --type kubernetes`, from the
`prefect-kubernetes` package, running in or against the cluster) turns every flow run of its pool
into a Job made from the pool's base job template: the pool's variables (with their defaults),
overridden by the deployment's job variables, filled into `job_configuration`.

The templates here start from the kubernetes worker's own default: `prefect-kubernetes`'s when it
is installed where `p2m deploy` runs, else the copy Prefect's server ships for the UI's "new work
pool" form (`aggregate-worker-metadata.json`; in Prefect 3.8.8 it lacks only the `annotations` and
`backoff_limit` variables of prefect-kubernetes 0.8.0). A template made either way was rendered by
prefect-kubernetes 0.8.0's own job configuration class (in a scratch environment: it is not a
dependency) into a Job with the same resources, toleration and /dev/shm volume as `render_job`
gives (the tests use `render_job`). What p2m adds:
- `image`: defaults to p2m's image (docker/Dockerfile; the GPU build for the gpu pool), since
  Prefect's default image does not hold p2m. Deployments on these pools import their flows from
  the installed `p2m` package (module entrypoints), not from a folder on the deploying machine.
- The gpu pool requests `gpu_count` GPUs (`nvidia.com/gpu`, default 1: the NVIDIA device plugin's
  resource) in requests and limits, tolerates the taint GPU node pools usually carry, and mounts
  a memory-backed /dev/shm: containers get 64 MiB of it and NCCL, which DDP training across the
  pod's GPUs uses, needs more. Training uses every GPU the pod gets (`p2m.tasks.student.launch`).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

GPU_RESOURCE = "nvidia.com/gpu"


@cache
def _prefect_default_template() -> dict:
    try:
        from prefect_kubernetes.worker import KubernetesWorker
    except ImportError:
        pass
    else:
        return KubernetesWorker.get_default_base_job_template()
    import prefect

    views = Path(prefect.__file__).parent / "server" / "api" / "collections_data" / "views"
    metadata = json.loads((views / "aggregate-worker-metadata.json").read_text(encoding="utf-8"))
    return metadata["prefect-kubernetes"]["kubernetes"]["default_base_job_configuration"]


def kubernetes_job_template(image: str, gpus: int = 0) -> dict:
    """The base job template of a kubernetes pool whose jobs run `image`, requesting `gpus` GPUs
    each (0: a CPU pool). A new dict each call."""
    template = copy.deepcopy(_prefect_default_template())
    variables = template["variables"]["properties"]
    variables["image"]["default"] = image
    if gpus:
        variables["gpu_count"] = {
            "title": "GPUs",
            "description": f"GPUs ({GPU_RESOURCE}) each flow run's pod requests; training uses all of them (DDP).",
            "type": "integer",
            "minimum": 1,
            "default": gpus,
        }
        pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        for side in ("requests", "limits"):  # Kubernetes wants both equal for extended resources
            container["resources"][side][GPU_RESOURCE] = "{{ gpu_count }}"
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
        container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    return template


def render_job(template: dict, job_variables: dict | None = None) -> dict:
    """The job configuration a worker makes from `template` for a run whose deployment has
    `job_variables`: the variables' defaults, overridden by the job variables, filled in; keys whose
    variable has no value are left out (Prefect's `apply_values`, as the worker uses it)."""
    from prefect.utilities.templating import apply_values

    properties = template["variables"]["properties"]
    values = {name: spec["default"] for name, spec in properties.items() if "default" in spec}
    values.update(job_variables or {})
    # A variable whose value is None (prefect-kubernetes' defaults for cpu_request and the like) is
    # left out of the manifest, as the worker leaves it.
    values = {name: value for name, value in values.items() if value is not None}
    return apply_values(copy.deepcopy(template["job_configuration"]), values)
