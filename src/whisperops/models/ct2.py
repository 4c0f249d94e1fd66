"""Read and write CTranslate2's ``model.bin`` (binary version 6) without ctranslate2 itself.

Layout, little-endian: ``u32 version``, string spec name, ``u32 revision``, ``u32 nvars``; per
variable a string name, ``u8 rank``, ``rank`` x ``u32`` dims, ``u8 dtype``, ``u32 nbytes``, data;
then ``u32`` alias count and (alias, target) string pairs. A string is a ``u16`` length that counts
a trailing NUL, then the bytes and the NUL.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
_ITEMSIZE = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class Variable:
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None = None  # None when read with ``load_data=False``

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class CT2Model:
    spec: str
    version: int
    revision: int
    variables: dict[str, Variable]
    aliases: dict[str, str]

    @property
    def num_parameters(self) -> int:
        # Quantisation scales are bookkeeping, not parameters of the network.
        return sum(v.numel for n, v in self.variables.items() if not n.endswith("_scale"))

    @property
    def weight_dtype(self) -> str:
        counts: dict[str, int] = {}
        for v in self.variables.values():
            counts[v.dtype] = counts.get(v.dtype, 0) + v.numel
        return max(counts, key=counts.__getitem__) if counts else "unknown"


def _read(f: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    buf = f.read(size)
    if len(buf) != size:
        raise ValueError("truncated CTranslate2 model.bin")
    return struct.unpack(fmt, buf)


def _read_string(f: BinaryIO) -> str:
    (length,) = _read(f, "<H")
    return f.read(length)[:-1].decode("utf-8")


def _write_string(f: BinaryIO, s: str) -> None:
    raw = s.encode("utf-8") + b"\0"
    f.write(struct.pack("<H", len(raw)))
    f.write(raw)


def iter_variables(f: BinaryIO, nvars: int, load_data: bool) -> Iterator[Variable]:
    for _ in range(nvars):
        name = _read_string(f)
        (rank,) = _read(f, "<B")
        shape = tuple(_read(f, f"<{rank}I")) if rank else ()
        (code,) = _read(f, "<B")
        (nbytes,) = _read(f, "<I")
        dtype = DTYPES[code]
        data = None
        if load_data:
            raw = f.read(nbytes)
            np_dtype = np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
            data = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
        else:
            f.seek(nbytes, 1)
        yield Variable(name, shape, dtype, data)


def read_model(path: str | Path, load_data: bool = True) -> CT2Model:
    """Parse ``model.bin`` (or a directory holding one). Skips tensor bytes if ``load_data`` is False."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    with path.open("rb") as f:
        return read_model_stream(f, str(path), load_data)


def read_model_stream(f: BinaryIO, name: str, load_data: bool = False) -> CT2Model:
    """:func:`read_model` over an open stream (``name`` is for messages); split weights read joined."""
    (version,) = _read(f, "<I")
    if version < 5:
        raise ValueError(f"{name}: CTranslate2 model.bin version {version} is not supported (need >= 5)")
    spec = _read_string(f)
    (revision,) = _read(f, "<I")
    (nvars,) = _read(f, "<I")
    variables = {v.name: v for v in iter_variables(f, nvars, load_data)}
    aliases: dict[str, str] = {}
    (nalias,) = _read(f, "<I")
    for _ in range(nalias):
        alias = _read_string(f)
        aliases[alias] = _read_string(f)
    return CT2Model(spec, version, revision, variables, aliases)


def write_model(model: CT2Model, path: str | Path) -> None:
    """Write ``model`` back in the same layout (the inverse of :func:`read_model`)."""
    path = Path(path)
    with path.open("wb") as f:
        f.write(struct.pack("<I", model.version))
        _write_string(f, model.spec)
        f.write(struct.pack("<I", model.revision))
        f.write(struct.pack("<I", len(model.variables)))
        for var in model.variables.values():
            if var.data is None:
                raise ValueError(f"variable {var.name} has no data to write")
            _write_string(f, var.name)
            f.write(struct.pack("<B", len(var.shape)))
            if var.shape:
                f.write(struct.pack(f"<{len(var.shape)}I", *var.shape))
            f.write(struct.pack("<B", DTYPE_CODES[var.dtype]))
            raw = np.ascontiguousarray(var.data).tobytes()
            if len(raw) != var.numel * _ITEMSIZE[var.dtype]:
                raise ValueError(f"variable {var.name}: data size does not match its shape and dtype")
            f.write(struct.pack("<I", len(raw)))
            f.write(raw)
        f.write(struct.pack("<I", len(model.aliases)))
        for alias, target in model.aliases.items():
            _write_string(f, alias)
            _write_string(f, target)
