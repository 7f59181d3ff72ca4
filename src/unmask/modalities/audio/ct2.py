"""Read CTranslate2 ``model.bin`` files (binary format version 6 and earlier) into torch tensors.

Layout: ``u32 version``, ``str name``, ``u32 revision``, ``u32 count``, then per variable ``str name``, ``u8 rank``,
``u32 dims[rank]``, ``u8 dtype``, ``u32 nbytes``, raw little-endian data; then ``u32 count`` aliases of
``str alias, str target``. Strings are ``u16 length`` (including a NUL) followed by the bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

_DTYPES = [np.float32, np.int8, np.int16, np.int32, np.float16, None]  # id 5 = bfloat16, read as int16 bits


def _read_string(f) -> str:
    (n,) = struct.unpack("<H", f.read(2))
    return f.read(n)[:-1].decode()


def read_ct2(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Variables of a CTranslate2 model (only those whose name starts with ``prefix``), aliases resolved."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        (version,) = struct.unpack("<I", f.read(4))
        if not 1 <= version <= 6:
            raise ValueError(f"{path}: unsupported CTranslate2 binary version {version} (this reader knows 1-6)")
        if version >= 2:
            _read_string(f)
            f.read(4)  # revision
        (count,) = struct.unpack("<I", f.read(4))
        for _ in range(count):
            name = _read_string(f)
            (rank,) = struct.unpack("<B", f.read(1))
            shape = struct.unpack(f"<{rank}I", f.read(4 * rank))
            if version >= 4:
                (dtype_id,) = struct.unpack("<B", f.read(1))
                (nbytes,) = struct.unpack("<I", f.read(4))
            else:
                (item,) = struct.unpack("<B", f.read(1))
                dtype_id = {4: 0, 1: 1, 2: 2}.get(item, 0)
                (num,) = struct.unpack("<I", f.read(4))
                nbytes = num * item
            if not name.startswith(prefix):
                f.seek(nbytes, 1)
                continue
            raw = f.read(nbytes)
            if dtype_id == 5:
                t = torch.frombuffer(bytearray(raw), dtype=torch.int16).view(torch.bfloat16)
            else:
                t = torch.from_numpy(np.frombuffer(raw, dtype=_DTYPES[dtype_id]).copy())
            out[name] = t.reshape(shape)
        if version >= 3:
            tail = f.read(4)
            if len(tail) == 4:
                for _ in range(struct.unpack("<I", tail)[0]):
                    alias, target = _read_string(f), _read_string(f)
                    if alias.startswith(prefix) and target in out:
                        out[alias] = out[target]
    return out
