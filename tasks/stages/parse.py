"""Stage 1, parse: a prompt file -> `spec.json` (instruction, demonstrations, language, kind, labels).

A prompt file is either YAML with explicit `instruction:` and `demonstrations:` (no LLM call), or
free text, which the teacher LLM splits into instruction and demonstrations. When the LLM's reply
is unusable (a weak local teacher often writes nonsense), labelled blocks such as
`Input: ... Output: ...` are parsed by rule; the spec records which method was used.

Then the task's kind (classification with its labels, extraction, generation): as the user gave
it (YAML `kind:`/`labels:`, or --kind/--labels), else by rule, else as the teacher reads it
(`p2m.tasks.core.kinds`). The language is read from the instruction, never from a demonstration.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.jsonreply import extract_json_object
from p2m.tasks.core.kinds import decide_kind, read_kind_by_rules
from p2m.tasks.core.spec import Example, PromptFile, PromptSpec
from p2m.tasks.core.yamltext import YAMLAliasError, load_yaml_text
from p2m.tasks.teacher.prompts import PAIR, chat, json_lines, json_schema

SPEC_KEYS = ("instruction", "demonstrations", "language", "kind", "labels")
KIND_PROPERTIES = {
    "kind": {"type": "string", "enum": ["classification", "extraction", "generation"]},
    "labels": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 50},
}
SPEC_SCHEMA = json_schema(
    "task_prompt",
    {
        "instruction": {"type": "string"},
        "demonstrations": {"type": "array", "items": PAIR},
        "language": {"type": "string"},
        **KIND_PROPERTIES,
    },
)
KIND_SCHEMA = json_schema("task_kind", KIND_PROPERTIES)
MAX_PROMPT_CHARS = 100_000


def read_prompt_file(path: Path, max_chars: int = MAX_PROMPT_CHARS) -> PromptFile:
    """Read a prompt file; YAML with `instruction:` becomes a spec, anything else stays text.

    YAML is read with every value as the text written ("007" stays "007", a date stays as
    typed) and without expanding aliases (a few lines of aliases can grow to gigabytes).
    Raises BadInputError for a missing, empty, binary, non-UTF-8 or oversized file, for a
    `.yaml`/`.yml` file that is not valid YAML, and for a spec with missing or mistyped fields.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise BadInputError(f"prompt file {path} {what}; pass the path of a text or YAML prompt file")
    try:
        size = path.stat().st_size
        check_prompt_size(size, f"prompt file {path}", max_chars)  # before reading: a huge file is never loaded
        raw = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"cannot read prompt file {path} ({e.strerror or e})") from None
    return prompt_from_bytes(raw, f"prompt file {path}", max_chars, yaml_file=path.suffix.lower() in {".yaml", ".yml"})


def check_prompt_size(size: int, source: str, max_chars: int = MAX_PROMPT_CHARS) -> None:
    """Raise BadInputError when `size` bytes are more than a prompt of `max_chars` characters can be."""
    if size > 4 * max_chars:
        raise BadInputError(
            f"{source} is {size:,} bytes, more than a prompt can be ({max_chars:,} characters, "
            "P2M_PARSE__MAX_PROMPT_CHARS); keep a few demonstrations and put the rest in a dataset file"
        )


def prompt_from_bytes(
    raw: bytes, source: str, max_chars: int = MAX_PROMPT_CHARS, yaml_file: bool = False
) -> PromptFile:
    """A prompt from the bytes of a file (local or fetched from a URL); `source` names it in errors.

    `yaml_file`: the file is meant to be YAML (its name ends in .yaml/.yml), so YAML errors are
    reported instead of the text being taken as free text. Raises BadInputError as `read_prompt_file`.
    """
    if b"\0" in raw:
        raise BadInputError(f"{source} is a binary file, not text; write the prompt as UTF-8 text or YAML")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{source} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    return prompt_from_text(text, max_chars, source, yaml_file)


def prompt_from_text(
    text: str, max_chars: int = MAX_PROMPT_CHARS, source: str = "the pasted prompt", yaml_file: bool = False
) -> PromptFile:
    """A prompt from its text (pasted into the Prefect UI's form, or read from a file), with the
    checks `read_prompt_file` makes: YAML with `instruction:` becomes a spec, anything else stays text.

    `source` names the prompt in errors. Raises BadInputError for an empty or oversized prompt,
    NUL characters, and YAML with missing or mistyped fields (and, with `yaml_file`, for text that
    is not valid YAML).
    """
    if "\0" in text:
        raise BadInputError(f"{source} holds NUL characters, so it is not text; write the prompt as text or YAML")
    text = text.strip()
    if not text:
        raise BadInputError(f"{source} is empty; write an instruction and a few examples in it")
    if len(text) > max_chars:
        raise BadInputError(
            f"{source} has {len(text):,} characters, more than {max_chars:,} "
            "(P2M_PARSE__MAX_PROMPT_CHARS); keep a few demonstrations and put the rest in a dataset file"
        )
    data = _load_yaml(text, source, strict=yaml_file)
    looks_like_spec = (
        isinstance(data, dict) and bool({"instruction", "demonstrations"} & set(data)) and set(data) <= set(SPEC_KEYS)
    )
    if not looks_like_spec and not yaml_file:
        return PromptFile(text=text)
    return PromptFile(text=text, spec=_spec_from_yaml(data, source))


def _load_yaml(text: str, path: Path | str, strict: bool):
    """The YAML document with every scalar as text, or None when the text is not YAML (and not `strict`)."""
    try:
        return load_yaml_text(text)
    except YAMLAliasError as e:
        raise BadInputError(f"{path} {e}") from None
    except yaml.YAMLError as e:
        if not strict:
            return None
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise BadInputError(
            f"{path}{where} is not valid YAML ({getattr(e, 'problem', None) or e}); "
            "fix it, or save the prompt as free text in a .txt file"
        ) from None


def _spec_from_yaml(data, path: Path | str) -> PromptSpec:
    """A spec from a YAML document read with every scalar as text; BadInputError says what is wrong."""
    if not isinstance(data, dict):
        raise BadInputError(
            f"{path} must hold `instruction:` and `demonstrations:` keys (found a YAML {type(data).__name__})"
        )
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise BadInputError(f"{path}: unknown key(s) {', '.join(unknown)}; a prompt file has {', '.join(SPEC_KEYS)}")
    instruction = data.get("instruction")
    if instruction is None or (isinstance(instruction, str) and not instruction.strip()):
        raise BadInputError(f"{path} has no `instruction:`; add one line saying what the model should do")
    if not isinstance(instruction, str):
        raise BadInputError(
            f"{path}: `instruction:` must be text, not a YAML {type(instruction).__name__}; write it as one paragraph"
        )
    demos = data.get("demonstrations") or []
    if not isinstance(demos, list):
        raise BadInputError(f"{path}: `demonstrations:` must be a list of items with `input:` and `output:`")
    examples = []
    for i, d in enumerate(demos, 1):
        if not isinstance(d, dict) or not isinstance(d.get("input"), str) or not isinstance(d.get("output"), str):
            raise BadInputError(f"{path}: demonstration {i} needs `input:` and `output:`, each a piece of text")
        examples.append(Example(input=d["input"], output=d["output"]))
    language = data.get("language") or detect_language(instruction)
    if not isinstance(language, str):
        raise BadInputError(f"{path}: `language:` must be a language code such as en")
    spec = PromptSpec(instruction=instruction.strip(), demonstrations=examples, language=language, parsed_by="yaml")
    kind, labels = data.get("kind"), data.get("labels")
    if kind is not None and kind not in ("classification", "extraction", "generation"):
        raise BadInputError(f"{path}: `kind:` must be classification, extraction or generation (or left out)")
    if labels is not None and (
        not isinstance(labels, list) or not all(isinstance(x, str) and x.strip() for x in labels)
    ):
        raise BadInputError(f"{path}: `labels:` must be a list of label names, one per line")
    if kind or labels:
        return with_kind(spec, spec.instruction, given_kind=kind, given_labels=labels, source="the prompt file")
    return spec


_LABELS = r"(?:input|question|q|text|source|x)"
_OUT_LABELS = r"(?:output|answer|a|label|target|y)"
_PAIR = re.compile(
    rf"^\s*{_LABELS}\s*[:：]\s*(?P<input>.+?)\s*\n\s*{_OUT_LABELS}\s*[:：]\s*(?P<output>.+?)\s*(?=\n\s*{_LABELS}\s*[:：]|\n\s*\n|\Z)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


def parse_by_rules(text: str) -> PromptSpec | None:
    """Parse `Input: ... / Output: ...` style blocks; the text before the first block is the instruction.

    Returns None when the text holds no such block or no instruction.
    """
    matches = list(_PAIR.finditer(text))
    if not matches:
        return None
    # A last line that only announces the examples ("Here are some examples:") is not the task.
    instruction = re.sub(
        r"\n[^\n]*\bexamples?\b[^\n]*:\s*$", "", text[: matches[0].start()].strip(), flags=re.I
    ).strip()
    if not instruction:
        return None
    demos = [Example(input=m["input"].strip(), output=m["output"].strip()) for m in matches]
    return PromptSpec(
        instruction=instruction, demonstrations=demos, language=detect_language(instruction), parsed_by="rules"
    )


def text_without_demonstrations(text: str, demonstrations: list[Example]) -> str:
    """`text` with every demonstration's input and output taken out."""
    for d in demonstrations:
        text = text.replace(d.input, " ").replace(d.output, " ")
    return text


def detect_language(text: str) -> str:
    """The language code of `text` (langdetect, seeded: the same text gives the same code); "en"
    for short or unsure ASCII text, where detectors guess (they read "Say hello." as Somali)."""
    from langdetect import DetectorFactory, LangDetectException, detect_langs

    DetectorFactory.seed = 0
    text = " ".join(text.split())
    try:
        best = detect_langs(text)[0]
    except LangDetectException:  # no letters at all
        return "en"
    if text.isascii() and (best.prob < 0.95 or len(text) < 25):
        return "en"
    return best.lang


def spec_from_llm_reply(reply: str, prompt_text: str) -> PromptSpec | None:
    """A spec from the LLM's JSON reply, or None if the reply is unusable.

    Demonstrations the LLM invented (their input is not in the prompt) are dropped: the parse
    must only restructure the user's prompt, never add to it.
    """
    data = extract_json_object(reply)
    if not data or not isinstance(data.get("instruction"), str) or not data["instruction"].strip():
        return None
    squashed = " ".join(prompt_text.split())
    demos = []
    for d in data.get("demonstrations") or []:
        if (
            isinstance(d, dict)
            and isinstance(d.get("input"), str)
            and isinstance(d.get("output"), str)
            and " ".join(d["input"].split()) in squashed
        ):
            demos.append(Example(input=d["input"].strip(), output=d["output"].strip()))
    # The language is read from the prompt without its demonstrations: the teacher translates the
    # instruction to English, and one demonstration in another language says nothing of the task's.
    return PromptSpec(
        instruction=data["instruction"].strip(),
        demonstrations=demos,
        language=detect_language(text_without_demonstrations(prompt_text, demos)),
        parsed_by="llm",
    )


def parse_prompt(prompt: PromptFile, llm=None, kind: str = "auto", labels: list[str] | None = None) -> PromptSpec:
    """The spec for a prompt file: split as written (YAML), else by the LLM, else by rule; then its
    kind and labels (`kind`/`labels`: the user's --kind/--labels, which win over everything).

    `llm` is a `p2m.tasks.teacher.client.LLMClient` (or a lazy one): asked to split free-text
    prompts, and to read the kind of a YAML prompt only when the rules cannot tell.
    Raises BadInputError when nothing usable can be read from the prompt.
    """
    spec, reading = split_prompt(prompt, llm)
    if labels or kind != "auto":
        return with_kind(spec, prompt.text, given_kind=kind, given_labels=labels, source="the command line")
    if spec.kind_reason:  # given in the prompt file
        return spec
    demos = [d.model_dump() for d in spec.demonstrations]
    if reading is None and llm is not None and read_kind_by_rules(spec.instruction, demos) is None:
        reply = llm.complete(
            chat("kind", instruction=spec.instruction, examples=json_lines(demos)),
            temperature=0,
            max_tokens=400,
            purpose="kind",
            response_format=KIND_SCHEMA,
        )
        reading = extract_json_object(reply[0] if reply else "")
    return with_kind(spec, prompt.text, reading=reading)


def with_kind(
    spec: PromptSpec,
    prompt_text: str,
    reading: dict | None = None,
    given_kind: str | None = None,
    given_labels: list[str] | None = None,
    source: str = "",
) -> PromptSpec:
    """`spec` with its kind, labels and the reason decided (`p2m.tasks.core.kinds.decide_kind`)."""
    decided = decide_kind(
        spec.instruction,
        [d.model_dump() for d in spec.demonstrations],
        prompt_text,
        teacher_reading=reading,
        given_kind=given_kind,
        given_labels=given_labels,
    )
    reason = f"{decided.reason} in {source}" if source else decided.reason
    return spec.model_copy(update={"kind": decided.kind, "labels": decided.labels, "kind_reason": reason})


def split_prompt(prompt: PromptFile, llm=None) -> tuple[PromptSpec, dict | None]:
    """(instruction and demonstrations as a spec, the teacher's reading of the kind when it was asked)."""
    if prompt.spec is not None:
        return prompt.spec, None
    by_rules = parse_by_rules(prompt.text)
    if by_rules is not None and by_rules.language == "en":
        # `Input:`/`Output:` blocks in an English prompt are read exactly by rule: the teacher would
        # only copy them again (167 s on the local teacher for an 8-label prompt on 2 cores).
        return by_rules, None
    by_llm, reading = None, None
    if llm is not None:
        reply = llm.complete(
            chat("parse", prompt=prompt.text),
            temperature=0,
            max_tokens=2048,
            purpose="parse",
            response_format=SPEC_SCHEMA,
        )
        by_llm = spec_from_llm_reply(reply[0] if reply else "", prompt.text)
        reading = extract_json_object(reply[0] if reply else "")
    # Prefer the LLM (it handles any format and language) unless it found fewer demonstrations
    # than the labelled blocks plainly show.
    if by_llm and (not by_rules or len(by_llm.demonstrations) >= len(by_rules.demonstrations)):
        return by_llm, reading
    if by_rules:
        return by_rules, reading
    if by_llm:
        return by_llm, reading
    raise BadInputError(
        "could not read an instruction and examples from the prompt; write it as YAML with "
        "`instruction:` and `demonstrations:` (see examples/), or label examples `Input:` / `Output:`"
    )
