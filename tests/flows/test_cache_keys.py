"""Cache keys cannot go stale: the code and templates a stage uses are found, not listed."""

import shutil

import p2m.flows.run.cache_keys as cache_keys
import p2m.tasks.teacher.prompts as prompts
import pytest
from p2m.flows.run import stage_tasks as stages

# Each stage task and the module that does its work.
STAGE_TASKS = {
    "parse": (stages.parse_task, "p2m.tasks.stages.parse"),
    "retrieve_datasets": (stages.retrieve_datasets_task, "p2m.tasks.stages.retrieve_datasets"),
    "generate": (stages.generate_task, "p2m.tasks.stages.generate"),
    "generate_batch": (stages.generate_batch_task, "p2m.tasks.stages.generate"),
    "retrieve_model": (stages.retrieve_model_task, "p2m.tasks.stages.retrieve_model"),
    "process": (stages.process_task, "p2m.tasks.stages.process"),
    "train": (stages.train_task, "p2m.tasks.stages.train"),
    "evaluate": (stages.evaluate_task, "p2m.tasks.stages.evaluate"),
    "publish_demo": (stages.publish_demo_task, "p2m.tasks.ship.demo"),
}
STAGE_MODULES = {module for _, module in STAGE_TASKS.values()}


def code_hashes() -> dict[str, str]:
    cache_keys.module_closure.cache_clear()
    return {name: cache_keys.code_hash(module, task.fn) for name, (task, module) in STAGE_TASKS.items()}


@pytest.fixture
def edited(monkeypatch):
    """edited(module, text): the source of `module` reads as its own plus `text`, for this test."""
    real = cache_keys.module_source

    def edit(module: str, text: str = "\n# edited\n"):
        monkeypatch.setattr(cache_keys, "module_source", lambda name: real(name) + (text if name == module else ""))

    yield edit
    cache_keys.module_closure.cache_clear()


def test_editing_a_template_changes_the_key_of_every_stage_that_renders_prompts(tmp_path, monkeypatch):
    before = code_hashes()
    copy = tmp_path / "templates"
    shutil.copytree(prompts.TEMPLATE_DIR, copy)
    (copy / "answer.system.txt").write_text((copy / "answer.system.txt").read_text() + " Be brief.")
    monkeypatch.setattr(prompts, "TEMPLATE_DIR", copy)
    after = code_hashes()
    changed = {name for name in before if before[name] != after[name]}
    # Every stage that talks to the teacher renders prompts (evaluation: the teacher baseline).
    assert changed == {"parse", "retrieve_datasets", "generate", "generate_batch", "retrieve_model", "evaluate"}


@pytest.mark.parametrize(
    "helper, users",
    [
        (
            "p2m.tasks.student.inference",
            {"train", "evaluate", "publish_demo"},
        ),  # lazily imported by train's callback too
        ("p2m.tasks.core.dedup", {"generate", "generate_batch", "process"}),
        ("p2m.tasks.retrieval.index", {"retrieve_datasets", "retrieve_model"}),
        ("p2m.tasks.storage.datafiles", {"retrieve_datasets", "retrieve_model", "evaluate"}),
    ],
)
def test_editing_a_helper_reruns_the_stages_that_use_it_and_no_other(edited, helper, users):
    before = code_hashes()
    edited(helper)
    after = code_hashes()
    assert {name for name in before if before[name] != after[name]} == users


@pytest.mark.parametrize(
    "module", ["p2m.tasks.teacher.shared_limits", "p2m.tasks.teacher.replicas", "p2m.tasks.report.render"]
)
def test_evaluation_does_not_depend_on_rate_limits_replicas_or_the_model_card(edited, module):
    before = code_hashes()
    edited(module)
    assert code_hashes()["evaluate"] == before["evaluate"]


def test_relative_and_package_imports_are_followed():
    found = cache_keys.imported_modules(
        "from . import dedup\nfrom ..storage import datafiles\nfrom p2m.tasks.student import inference\n",
        "p2m.tasks.core.spec",
    )
    assert {"p2m.tasks.core.dedup", "p2m.tasks.storage.datafiles", "p2m.tasks.student.inference"} <= found


def test_the_task_wrappers_own_code_is_in_its_key():
    """Two wrappers around the same stage module differ in their keys (the wrapper's body counts)."""
    hashes = code_hashes()
    assert hashes["generate"] != hashes["generate_batch"]


def test_no_stage_module_imports_another():
    for module in STAGE_MODULES:
        imported = cache_keys.imported_modules(cache_keys.module_source(module))
        assert not imported & (STAGE_MODULES - {module}), f"{module} imports {imported & STAGE_MODULES}"
