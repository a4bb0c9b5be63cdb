"""A pickle reader for NVIDIA network pickles that cannot run code from the file.

Official StyleGAN2-ADA / StyleGAN3 ``.pkl`` files are ordinary pickles whose
networks reduce to ``torch_utils.persistence._reconstruct_persistent_obj(meta)``;
the reference loader ``exec``s ``meta['module_src']``. Here ``find_class`` admits
only the globals such files need, each replaced by a stand-in that builds plain
data: tensors (storages read by ``torch.load(weights_only=True)``), numpy
scalars/arrays, dicts, and :class:`PersistentRecord` (``module_src`` is dropped
unread). Anything else raises :class:`ModelError` naming the global.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import ModelError


@dataclasses.dataclass(frozen=True)
class PersistentRecord:
    """What a persistent network object held: its class name and pickled ``__dict__``."""

    class_name: str
    version: int
    state: dict[str, Any]


class PlainDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: just a dict."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise ModelError("network pickle has a persistent object whose meta is not a class record")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise ModelError("network pickle has a persistent object without class_name/state")
    version = meta.get("version")
    return PersistentRecord(class_name=class_name, version=int(version) if isinstance(version, int) else -1,
                            state=state)


def _load_storage_from_bytes(data: Any) -> Any:
    """Replacement for ``torch.storage._load_from_bytes`` that cannot run code."""
    if not isinstance(data, (bytes, bytearray)):
        raise ModelError(f"network pickle storage record holds {type(data).__name__}, not bytes")
    try:
        storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
        raise ModelError(f"network pickle has an unreadable tensor storage: {exc}") from exc
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise ModelError(f"network pickle storage record decoded to {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> torch.Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise ModelError(f"network pickle tensor is built on {type(storage).__name__}, not a storage")
    if backward_hooks or metadata:
        raise ModelError("network pickle tensor carries backward hooks or metadata; refusing")
    if not (_int_tuple(size) and _int_tuple(stride) and isinstance(storage_offset, int)):
        raise ModelError("network pickle tensor has a malformed size/stride/offset")
    try:
        return torch._utils._rebuild_tensor_v2(  # noqa: SLF001 - the documented rebuild hook
            storage, storage_offset, tuple(size), tuple(stride), bool(requires_grad), collections.OrderedDict()
        )
    except Exception as exc:
        raise ModelError(f"network pickle tensor does not fit its storage: {exc}") from exc


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> torch.nn.Parameter:
    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise ModelError("network pickle parameter is malformed or carries backward hooks")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any,
                                  state: Any) -> torch.nn.Parameter:
    if state:
        raise ModelError("network pickle parameter carries extra Python state; refusing")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise ModelError("network pickle has a numpy scalar that is not plain numeric data")
    if len(data) != dtype.itemsize:
        raise ModelError("network pickle has a numpy scalar with the wrong byte count")
    return np.frombuffer(data, dtype=dtype)[0]


class _NdarrayClassMarker:
    """What ``numpy.ndarray`` resolves to: only an argument for ``_reconstruct``, not callable."""


def _numpy_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not _NdarrayClassMarker:
        raise ModelError("network pickle has a numpy array of a subclass; refusing")
    return np.ndarray.__new__(np.ndarray, (0,), dtype=np.uint8)


def _numpy_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Protocol-5 numpy arrays (in-band buffer), plain numeric dtypes only."""
    if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise ModelError("network pickle has a numpy array that is not plain numeric data")
    if not _int_tuple(shape) or order not in ("C", "F"):
        raise ModelError("network pickle has a numpy array with a malformed shape")
    try:
        return np.frombuffer(bytes(buffer), dtype=dtype).reshape(tuple(shape), order=order).copy()
    except ValueError as exc:
        raise ModelError(f"network pickle has a malformed numpy array: {exc}") from exc


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise ModelError("network pickle has a numpy dtype that is not a type code")
    return np.dtype(spec, align=bool(align), copy=bool(copy))


def _latin1_bytes(text: Any, encoding: Any = None) -> bytes:
    """Protocol-2 pickles spell ``bytes`` as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ModelError("network pickle uses _codecs.encode other than for latin-1 bytes; refusing")
    return text.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): _dtype,
    ("numpy", "ndarray"): _NdarrayClassMarker,
    ("dnnlib.util", "EasyDict"): PlainDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
}
for _numpy_module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_numpy_module, "scalar")] = _numpy_scalar
    _ALLOWED[(_numpy_module, "_reconstruct")] = _numpy_reconstruct
for _numpy_module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_numpy_module, "_frombuffer")] = _numpy_frombuffer


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals in ``_ALLOWED`` (to safe stand-ins)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ModelError(f"refusing to load global '{module}.{name}' from network pickle") from None

    def persistent_load(self, pid: Any) -> Any:
        raise ModelError("refusing persistent id in network pickle (not an official network pickle)")


def read_network_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; errors become :class:`ModelError`."""
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh).load()
    except ModelError:
        raise
    except FileNotFoundError:
        raise ModelError(f"network pickle {str(path)!r} does not exist") from None
    except Exception as exc:  # malformed pickles raise many types
        raise ModelError(f"network pickle {str(path)!r} is malformed: {type(exc).__name__}: {exc}") from exc


def _int_tuple(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
