"""Reading MANO model pickles without running code from them (spec/formats.md §5, docs/reliability.md).

A pickle is a small program: unpickling calls whatever importable function its opcodes name, so a plain
``pickle.load`` of a ``MANO_RIGHT.pkl`` received from someone else — or of the ``mano/`` folder inside a
ground-truth archive — can run ``os.system``. :func:`read_mano_pickle` runs the standard unpickler with an
allow-list instead: every global a pickle names is looked up in :data:`ALLOWED_GLOBALS`, which holds exactly
what MANO files need, and anything else is refused before it is called (:class:`UnsafePickleError`).

What the files need, and what each name resolves to (never to the named module itself, so old module
paths keep working after NumPy and SciPy remove them):

* NumPy arrays: ``numpy.core.multiarray._reconstruct`` (also ``numpy._core``, NumPy ≥ 2), ``numpy.ndarray``,
  ``numpy.dtype``, ``numpy.core.multiarray.scalar`` and, for protocol-5 pickles, ``numpy.core.numeric.
  _frombuffer``: stand-ins that build plain numeric arrays and scalars only (object arrays are refused, and
  the array size comes from the stored data, not from a requested shape);
* SciPy sparse matrices (the official ``J_regressor``): ``scipy.sparse.csc.csc_matrix`` of the 2017 files,
  ``scipy.sparse._csc.csc_matrix`` of current SciPy, the CSR equivalents and the ``*_array`` classes: a
  :class:`SparseStub` that keeps the stored ``data/indices/indptr/shape`` and is only rebuilt — after a full
  format check, at its declared size — when an array is asked for (:func:`as_array`);
* chumpy objects (``chumpy.*``, the official ``shapedirs``): a :class:`ChumpyStub` keeping the stored
  array ``x``; chumpy is never imported;
* protocol 0-2 plumbing: ``copy_reg._reconstructor`` (only to create the stubs above), ``__builtin__.object``,
  ``set``/``frozenset`` and ``_codecs.encode`` (latin-1 only, how Python 3 writes bytes in protocol 2).

Module paths are matched exactly (``copy_reg``/``__builtin__`` of Python 2 files included). The
stand-ins are created per file, so a pickle that sets attributes on them cannot affect a later load.
:func:`is_synthetic_mano` tells mvhand's synthetic stand-in model (:mod:`mvhand.synthetic.mano_model`, marked
with :data:`SYNTHETIC_MARKER_KEY`) from the licensed one. This module imports neither torch nor chumpy.
"""

from __future__ import annotations

import codecs
import copyreg
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ALLOWED_GLOBALS",
    "MAX_MANO_PICKLE_BYTES",
    "SYNTHETIC_MARKER_KEY",
    "SYNTHETIC_MARKER_TEXT",
    "ChumpyStub",
    "SparseStub",
    "UnsafePickleError",
    "as_array",
    "is_synthetic_mano",
    "loads_mano_pickle",
    "read_mano_pickle",
]

#: Key that marks mvhand's synthetic MANO-format files (the licensed files never carry it).
SYNTHETIC_MARKER_KEY = "mvhand_synthetic"
SYNTHETIC_MARKER_TEXT = (
    "mvhand synthetic MANO-format stand-in (mvhand.synthetic.mano_model), not the licensed MANO model"
)
#: Largest MANO pickle read (the official files are about 4 MB).
MAX_MANO_PICKLE_BYTES = 128 << 20
#: Largest array (elements) a sparse matrix or a chumpy object may expand to.
MAX_ARRAY_ELEMENTS = 50_000_000


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`, or calls an allowed one in a way MANO
    files never do; nothing it names has been called."""


# --------------------------------------------------------------------------------------------------
# Stand-ins
# --------------------------------------------------------------------------------------------------


class ChumpyStub:
    """Stands in for any ``chumpy`` class while unpickling; the array lives in the state under ``x``."""

    def __new__(cls, *args: Any, **kwargs: Any):  # arguments (if any) are not used: the array is state
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if "x" not in self.__dict__:
            raise ValueError(f"chumpy object {type(self).__name__} has no stored array 'x'")
        x = as_array(self.__dict__["x"])
        return x.astype(dtype) if dtype is not None else x


class SparseStub:
    """Stands in for a pickled SciPy CSC/CSR matrix: keeps its stored state; :meth:`to_array` rebuilds it."""

    fmt = "csc"

    def __new__(cls, *args: Any, **kwargs: Any):
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            raise UnsafePickleError(
                f"a sparse {self.fmt} matrix is constructed with arguments; MANO files store its arrays as state"
            )

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise UnsafePickleError(f"sparse matrix state is a {type(state).__name__}, expected a dict")
        self.__dict__.update(state)

    def to_array(self, max_elements: int = MAX_ARRAY_ELEMENTS) -> np.ndarray:
        """The dense matrix, after checking the stored arrays (a malformed one raises ValueError)."""
        import scipy.sparse

        st = self.__dict__
        shape = st.get("_shape", st.get("shape"))
        if (
            not isinstance(shape, tuple)
            or len(shape) != 2
            or not all(isinstance(d, int | np.integer) and 0 <= d for d in shape)
        ):
            raise ValueError(f"sparse matrix has no valid 2-D shape (got {shape!r})")
        if int(shape[0]) * int(shape[1]) > max_elements:
            raise ValueError(f"sparse matrix of shape {shape} is larger than any MANO array")
        parts = []
        for name in ("data", "indices", "indptr"):
            if name not in st:
                raise ValueError(f"sparse matrix lacks its {name!r} array")
            arr = as_array(st[name])
            if arr.ndim != 1:
                raise ValueError(f"sparse matrix {name!r} is not 1-D")
            parts.append(arr)
        data, indices, indptr = parts
        if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
            raise ValueError("sparse matrix index arrays are not integers")
        cls = scipy.sparse.csc_matrix if self.fmt == "csc" else scipy.sparse.csr_matrix
        m = cls((data, indices, indptr), shape=(int(shape[0]), int(shape[1])))
        m.check_format(full_check=True)  # index bounds and monotone indptr, before any C++ kernel reads them
        return np.asarray(m.toarray())


class _NdarrayToken:
    """What ``numpy.ndarray`` resolves to: only accepted as the subtype argument of ``_reconstruct``."""


def as_array(value: Any, max_elements: int = MAX_ARRAY_ELEMENTS) -> np.ndarray:
    """A loaded value as a plain numeric ndarray: arrays, numbers, chumpy stubs and sparse stubs.

    Raises:
        ValueError: anything else (strings, object arrays, …), or a stub that cannot be rebuilt.
    """
    if isinstance(value, SparseStub):
        return value.to_array(max_elements)
    if isinstance(value, ChumpyStub):
        return np.asarray(value)
    if isinstance(value, np.ndarray | np.generic | int | float | bool) or (
        isinstance(value, list | tuple) and not any(isinstance(v, str | bytes) for v in value)
    ):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"not a numeric array (dtype {arr.dtype})")
        return arr
    raise ValueError(f"a {type(value).__name__} is not an array")


# --------------------------------------------------------------------------------------------------
# Safe callables
# --------------------------------------------------------------------------------------------------


def _numeric_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise UnsafePickleError(f"object arrays ({dt}) are not part of a MANO file")
    return dt


def _make_globals() -> tuple[dict[tuple[str, str], Any], list[type]]:
    """Fresh stand-ins for one load (a pickle may set attributes on what it gets; nothing is shared).

    Returns:
        ``(table, stubs)``: (module, name) → stand-in, and the stub classes created for this load (the only
        classes ``copy_reg._reconstructor`` may instantiate; chumpy stubs are added as the pickle names them).
    """
    ndarray_token = type("ndarray", (_NdarrayToken,), {})
    stubs: list[type] = []

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        # numpy pickles an array as _reconstruct(ndarray, (0,), b"b") + __setstate__(shape, dtype, data); the
        # stored data decides the size (the requested shape is numpy's constant (0,)).
        if not (isinstance(subtype, type) and issubclass(subtype, _NdarrayToken)):
            raise UnsafePickleError(f"_reconstruct of {subtype!r}: only numpy.ndarray is allowed")
        return np.ndarray.__new__(np.ndarray, (0,), np.dtype("b"))

    def dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
        if not isinstance(obj, str | bytes):
            raise UnsafePickleError(f"numpy.dtype({obj!r}): only dtype names are allowed")
        dt = np.dtype(obj.decode("latin1") if isinstance(obj, bytes) else obj, bool(align), bool(copy))
        if dt.hasobject:
            raise UnsafePickleError(f"object arrays ({dt}) are not part of a MANO file")
        return dt

    def scalar(dt: Any, data: Any = None) -> Any:
        if not isinstance(dt, np.dtype) or not isinstance(data, bytes | str):
            raise UnsafePickleError("numpy scalar: only a numeric dtype with its bytes is allowed")
        raw = data.encode("latin1") if isinstance(data, str) else data
        return np.frombuffer(raw, _numeric_dtype(dt), count=1)[0]

    def frombuffer(buf: Any, dt: Any, shape: Any, order: Any = "C") -> np.ndarray:
        if not isinstance(dt, np.dtype) or not isinstance(buf, bytes | bytearray | memoryview):
            raise UnsafePickleError("numpy _frombuffer: only a numeric dtype over bytes is allowed")
        arr = np.frombuffer(buf, _numeric_dtype(dt))
        return arr.reshape(tuple(int(d) for d in shape), order="F" if order == "F" else "C").copy()

    def encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(obj, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1"):
            raise UnsafePickleError(f"_codecs.encode with {encoding!r}: only latin-1 text is allowed")
        return codecs.encode(obj, "latin-1")

    def reconstructor(cls: Any, base: Any, state: Any) -> Any:
        if base is not object or cls not in stubs:
            raise UnsafePickleError(
                f"copy_reg._reconstructor({cls!r}, {base!r}): only MANO's objects are allowed"
            )
        return copyreg._reconstructor(cls, base, None)

    def sparse(fmt: str, name: str) -> type:
        cls = type(name, (SparseStub,), {"fmt": fmt, "__module__": "mvhand.mano_pickle._sparse_stub"})
        stubs.append(cls)
        return cls

    table: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[mod, "_reconstruct"] = reconstruct
        table[mod, "scalar"] = scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        table[mod, "_frombuffer"] = frombuffer
    table["numpy", "ndarray"] = ndarray_token
    table["numpy", "dtype"] = dtype
    for fmt in ("csc", "csr"):
        for kind in ("matrix", "array"):
            name = f"{fmt}_{kind}"
            cls = sparse(fmt, name)
            for mod in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}", "scipy.sparse"):
                table[mod, name] = cls
    for mod in ("copy_reg", "copyreg"):
        table[mod, "_reconstructor"] = reconstructor
    for mod in ("__builtin__", "builtins"):
        table[mod, "object"] = object
        table[mod, "set"] = set
        table[mod, "frozenset"] = frozenset
    table["_codecs", "encode"] = encode
    return table, stubs


#: The (module, name) pairs a MANO pickle may name (besides any ``chumpy.*`` class).
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(_make_globals()[0])


class _MANOUnpickler(pickle.Unpickler):
    """The standard (C) unpickler with :meth:`find_class` restricted to :data:`ALLOWED_GLOBALS`."""

    def __init__(self, fh: io.BufferedIOBase) -> None:
        super().__init__(fh, encoding="latin1")  # Python 2 str -> latin-1, as numpy expects
        self._globals, self._stubs = _make_globals()

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            cls = type(name, (ChumpyStub,), {"__module__": "mvhand.mano_pickle._chumpy_stub"})
            self._stubs.append(cls)
            return cls
        found = self._globals.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"refused to load {module}.{name}: a MANO file never needs it (a pickle naming it could run "
                "code, so nothing was executed)"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are not part of a MANO file")


def loads_mano_pickle(data: bytes) -> Any:
    """Unpickle MANO-file bytes with the allow-list (see the module docstring).

    Raises:
        UnsafePickleError: a global outside the allow-list (nothing it names was called).
        Exception: whatever a corrupt or truncated pickle raises (``UnpicklingError``, ``EOFError``, …).
    """
    return _MANOUnpickler(io.BytesIO(data)).load()


def read_mano_pickle(path: str | os.PathLike) -> Any:
    """Read a MANO pickle file with the allow-list (at most :data:`MAX_MANO_PICKLE_BYTES`).

    Raises:
        UnsafePickleError: see :func:`loads_mano_pickle`; ValueError: the file is larger than any MANO file.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_MANO_PICKLE_BYTES:
        raise ValueError(f"{size} bytes, more than any MANO file (limit {MAX_MANO_PICKLE_BYTES >> 20} MiB)")
    return loads_mano_pickle(path.read_bytes())


def is_synthetic_mano(path: str | os.PathLike) -> bool:
    """True if ``path`` is one of mvhand's synthetic MANO-format files (marked with :data:`SYNTHETIC_MARKER_KEY`).

    False for anything else, including files that cannot be read (their loader reports those).
    """
    try:
        raw = read_mano_pickle(path)
    except Exception:  # noqa: BLE001 - unreadable or unsafe: not ours; the loader gives the real error
        return False
    return isinstance(raw, dict) and SYNTHETIC_MARKER_KEY in raw
