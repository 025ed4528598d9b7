"""Cache keys cannot go stale: the code and templates a stage uses are found, not listed."""

import shutil

import p2m.tasks.cache_keys as cache_keys
import p2m.tasks.prompts as prompts
import pytest
from p2m.tasks import stages

# Each stage task and the module that does its work.
STAGE_TASKS = {
    "parse": (stages.parse_task, "p2m.tasks.parse"),
    "retrieve_datasets": (stages.retrieve_datasets_task, "p2m.tasks.retrieve_datasets"),
    "generate": (stages.generate_task, "p2m.tasks.generate"),
    "generate_batch": (stages.generate_batch_task, "p2m.tasks.generate"),
    "retrieve_model": (stages.retrieve_model_task, "p2m.tasks.retrieve_model"),
    "process": (stages.process_task, "p2m.tasks.process"),
    "train": (stages.train_task, "p2m.tasks.train"),
    "evaluate": (stages.evaluate_task, "p2m.tasks.evaluate_model"),
    "publish_demo": (stages.publish_demo_task, "p2m.tasks.demo"),
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
        ("p2m.tasks.inference", {"train", "evaluate", "publish_demo"}),  # lazily imported by train's callback too
        ("p2m.tasks.dedup", {"generate", "generate_batch", "process"}),
        ("p2m.tasks.index", {"retrieve_datasets", "retrieve_model"}),  # imported inside functions only
        ("p2m.tasks.datafiles", {"retrieve_datasets", "retrieve_model", "evaluate"}),
    ],
)
def test_editing_a_helper_reruns_the_stages_that_use_it_and_no_other(edited, helper, users):
    before = code_hashes()
    edited(helper)
    after = code_hashes()
    assert {name for name in before if before[name] != after[name]} == users


def test_the_task_wrappers_own_code_is_in_its_key():
    """Two wrappers around the same stage module differ in their keys (the wrapper's body counts)."""
    hashes = code_hashes()
    assert hashes["generate"] != hashes["generate_batch"]


def test_no_stage_module_imports_another():
    for module in STAGE_MODULES:
        imported = cache_keys.imported_modules(cache_keys.module_source(module))
        assert not imported & (STAGE_MODULES - {module}), f"{module} imports {imported & STAGE_MODULES}"
