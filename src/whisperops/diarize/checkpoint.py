"""Tensors of a ``torch.save`` checkpoint as numpy arrays, without torch.

Diarization only needs a few weight matrices from resemblyzer's ``pretrained.pt``; importing torch
to read them cost more than the embeddings themselves. Both of torch's formats are read: the legacy
one (a run of pickles followed by each storage's raw bytes, which resemblyzer's file uses) and the
zip one (``data.pkl`` plus ``data/<key>`` entries, torch 1.6 on). The unpickler builds only
containers, numbers and tensors: every other global in the pickle is refused, so a checkpoint
cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

# torch storage type name -> numpy dtype (bfloat16 has none, and such a checkpoint is refused).
_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class CheckpointError(ValueError):
    """A checkpoint this reader cannot or will not read (with the path and why)."""


@dataclass
class _Storage:
    """One storage the pickle refers to; its bytes are read after the pickle (legacy) or on demand (zip)."""

    dtype: type
    numel: int
    data: np.ndarray | None = None


@dataclass
class _Tensor:
    """A view into a storage, resolved once every storage's bytes are in."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        base = self.storage.data
        if base is None:
            raise CheckpointError("a tensor's storage has no data")
        if not self.shape:
            return base[self.offset].copy()
        itemsize = base.itemsize
        end = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True)) + 1
        if self.offset < 0 or end > base.size or min(self.stride) < 0:
            raise CheckpointError(f"a tensor of shape {self.shape} reaches outside its storage")
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :], self.shape, tuple(s * itemsize for s in self.stride), writeable=False
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage: _Storage, offset: int, shape: tuple, stride: tuple, *_: Any) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGES:
            return name
        raise pickle.UnpicklingError(f"{module}.{name} is not a tensor, storage or container: refused")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _STORAGES):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        _, kind, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 checkpoints) are not supported")
        storage = self.storages.setdefault(str(key), _Storage(_STORAGES[kind], int(numel)))
        if storage.dtype is not _STORAGES[kind]:
            raise pickle.UnpicklingError(f"storage {key} is used with two types")
        return storage


def _arrays(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested in dicts, lists, tuples) turned into an array."""
    if isinstance(obj, _Tensor):
        return obj.array()
    if isinstance(obj, dict):
        return type(obj)((k, _arrays(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_arrays(v) for v in obj)
    return obj


def _load_legacy(f: IO[bytes]) -> Any:
    def safe() -> Any:  # the header pickles: plain values, so the same refusals apply
        return _Unpickler(f, {}).load()

    if safe() != _LEGACY_MAGIC:
        raise CheckpointError("not a torch checkpoint (no magic number)")
    safe()  # protocol version
    info = safe()
    if not info.get("little_endian", True):
        raise CheckpointError("a big-endian checkpoint")
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, storages).load()
    for key in safe():
        storage = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * np.dtype(storage.dtype).itemsize
        raw = f.read(nbytes)
        if numel != storage.numel or len(raw) != nbytes:
            raise CheckpointError(f"storage {key} is truncated or its size does not match")
        storage.data = np.frombuffer(raw, dtype=np.dtype(storage.dtype).newbyteorder("<"))
    return obj


def _load_zip(archive: zipfile.ZipFile) -> Any:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise CheckpointError("a zip without one data.pkl")
    root = pickles[0][: -len("data.pkl")]
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
    for key, storage in storages.items():
        raw = archive.read(f"{root}data/{key}")
        nbytes = storage.numel * np.dtype(storage.dtype).itemsize
        if len(raw) < nbytes:
            raise CheckpointError(f"storage {key} is truncated")
        storage.data = np.frombuffer(raw[:nbytes], dtype=np.dtype(storage.dtype).newbyteorder("<"))
    return obj


def load(path: Path) -> Any:
    """The object ``torch.save`` wrote to ``path``, with numpy arrays for its tensors.

    Raises:
        CheckpointError: Not a torch checkpoint, or one holding anything but tensors and containers.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                obj = _load_zip(archive)
        else:
            with path.open("rb") as f:
                obj = _load_legacy(f)
        return _arrays(obj)
    except (pickle.UnpicklingError, EOFError, KeyError, struct.error, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from err
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
