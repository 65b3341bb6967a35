"""MANO pickles never run code (mvhand.mano_pickle): hand-assembled 2017-style files load, payloads are refused.

The pickles here are written opcode by opcode (see :class:`Asm`), exactly as Python 2.7 / NumPy 1.x / SciPy
0.x / chumpy wrote the official ``MANO_{LEFT,RIGHT}.pkl`` in 2017 (module paths ``numpy.core.multiarray``,
``scipy.sparse.csc``, ``copy_reg``, ``__builtin__``, py2 ``str`` array data), and as attackers would write
them. Nothing imports chumpy, and no payload may leave its marker file behind.
"""

from __future__ import annotations

import pickle
import pickletools
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import FLOAT_KEYS, make_mano_arrays

from mvhand.geometry.mano import load_mano_pkl
from mvhand.io_utils import InputError
from mvhand.mano_pickle import (
    ALLOWED_GLOBALS,
    SYNTHETIC_MARKER_KEY,
    UnsafePickleError,
    is_synthetic_mano,
    loads_mano_pickle,
)


class Asm:
    """A tiny pickle assembler (protocol 2 opcodes; STACK_GLOBAL for protocol-4 payloads)."""

    def __init__(self, proto: int = 2):
        self.b = bytearray(b"\x80" + bytes([proto]))

    def op(self, code: bytes) -> Asm:
        self.b += code
        return self

    def glob(self, module: str, name: str) -> Asm:
        return self.op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def stack_glob(self, module: str, name: str) -> Asm:
        return self.uni(module).uni(name).op(b"\x93")

    def uni(self, s: str) -> Asm:  # BINUNICODE (py3 str / py2 unicode)
        raw = s.encode()
        return self.op(b"X" + struct.pack("<I", len(raw)) + raw)

    def py2str(self, raw: bytes) -> Asm:  # BINSTRING: a Python 2 str (decoded as latin-1 by the loader)
        return self.op(b"T" + struct.pack("<I", len(raw)) + raw)

    def int(self, v: int) -> Asm:
        if 0 <= v < 2**31:
            return self.op(b"J" + struct.pack("<i", v))
        raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)  # LONG1
        return self.op(b"\x8a" + bytes([len(raw)]) + raw)

    def tuple(self, *items) -> Asm:
        self.op(b"(")
        for it in items:
            self.value(it)
        return self.op(b"t")

    def value(self, v) -> Asm:
        if isinstance(v, Asm):
            return self.op(bytes(v.b[2:]))
        if v is None:
            return self.op(b"N")
        if v is True or v is False:
            return self.op(b"\x88" if v else b"\x89")
        if isinstance(v, int):
            return self.int(v)
        if isinstance(v, str):
            return self.uni(v)
        if isinstance(v, bytes):
            return self.py2str(v)
        if isinstance(v, tuple):
            return self.tuple(*v)
        if isinstance(v, np.ndarray):
            return self.py2_array(v)
        raise TypeError(type(v))

    def dict(self, items: dict) -> Asm:
        self.op(b"}(")
        for k, v in items.items():
            self.uni(k).value(v)
        return self.op(b"u")

    def call(self, module: str, name: str, *args) -> Asm:  # GLOBAL + args + REDUCE
        return self.glob(module, name).tuple(*args).op(b"R")

    def py2_dtype(self, dt: np.dtype) -> Asm:
        code = dt.str[1:]  # 'f8', 'u4', 'i8'
        order = "|" if dt.itemsize == 1 else "<"
        self.call("numpy", "dtype", code.encode(), 0, 1)
        return self.tuple(3, order.encode(), None, None, None, -1, -1, 0).op(b"b")

    def py2_array(self, a: np.ndarray) -> Asm:
        """``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')`` + BUILD, data as a py2 str."""
        a = np.ascontiguousarray(a)
        self.glob("numpy.core.multiarray", "_reconstruct").op(b"(").glob("numpy", "ndarray")
        self.tuple(0).py2str(b"b").op(b"tR")
        self.op(b"(").int(1).tuple(*a.shape).py2_dtype(a.dtype).op(b"\x89").py2str(a.tobytes()).op(b"t")
        return self.op(b"b")

    def newobj(self, module: str, name: str, state: dict) -> Asm:  # cls.__new__(cls) + BUILD(state)
        self.glob(module, name).op(b")\x81")
        return self.dict(state).op(b"b")

    def done(self) -> bytes:
        return bytes(self.b + b".")


def sub(proto: int = 2) -> Asm:
    """An assembler for a nested value (its PROTO header is dropped by :meth:`Asm.value`)."""
    return Asm(proto)


def mano_2017(arrays: dict) -> bytes:
    """The official file layout: shapedirs a chumpy ``Ch``, J_regressor a ``scipy.sparse.csc.csc_matrix``."""
    import scipy.sparse

    reg = scipy.sparse.csc_matrix(arrays["J_regressor"])
    a = Asm()
    a.op(b"}(")
    for key, v in arrays.items():
        a.uni(key)
        if key == "shapedirs":
            empty_set = sub().call("__builtin__", "set", sub().op(b"]"))
            a.newobj("chumpy.ch", "Ch", {"x": v, "_dirty_vars": empty_set, "_itr": None})
        elif key == "J_regressor":
            state = {
                "_shape": reg.shape,
                "maxprint": 50,
                "format": "csc",
                "data": reg.data,
                "indices": reg.indices.astype(np.int32),
                "indptr": reg.indptr.astype(np.int32),
            }
            a.newobj("scipy.sparse.csc", "csc_matrix", state)
        elif isinstance(v, np.ndarray):
            a.py2_array(v)
        else:
            a.py2str(str(v).encode())
    a.op(b"u")
    return a.done()


def test_allow_list_is_what_mano_files_need():
    modules = {m for m, _ in ALLOWED_GLOBALS}
    assert modules <= {
        "numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric",
        "scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr",
        "copy_reg", "copyreg", "__builtin__", "builtins", "_codecs",
    }  # fmt: skip
    assert ("builtins", "eval") not in ALLOWED_GLOBALS and ("os", "system") not in ALLOWED_GLOBALS


def test_2017_style_file_loads_without_chumpy_or_old_modules(tmp_path, monkeypatch):
    """Python 2 paths (numpy.core, scipy.sparse.csc, __builtin__) resolve without importing those modules."""
    arrays = make_mano_arrays(7)
    data = mano_2017(arrays)
    names = {op.name for op, _, _ in pickletools.genops(data)}
    assert {"GLOBAL", "NEWOBJ", "BINSTRING", "REDUCE", "BUILD"} <= names
    for mod in ("chumpy", "chumpy.ch", "scipy.sparse.csc", "numpy.core.multiarray"):
        monkeypatch.setitem(sys.modules, mod, None)  # importing any of them would fail
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(data)
    got = load_mano_pkl(path)
    for key in FLOAT_KEYS:
        np.testing.assert_array_equal(got[key], arrays[key])
    assert got["kintree_table"][0].tolist()[0] == -1 and got["f"].dtype == np.int64


@pytest.mark.parametrize("proto", [0, 1, 2, 4, 5])
def test_python3_pickles_of_every_protocol_load(tmp_path, proto):
    import scipy.sparse

    arrays = make_mano_arrays(3)
    arrays["J_regressor"] = scipy.sparse.csr_matrix(arrays["J_regressor"])
    path = tmp_path / "MANO_LEFT.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=proto))
    got = load_mano_pkl(path)
    np.testing.assert_array_equal(got["J_regressor"], arrays["J_regressor"].toarray())
    np.testing.assert_array_equal(got["posedirs"], arrays["posedirs"])


def _payloads(marker: Path) -> dict[str, bytes]:
    cmd = f"touch {marker}"
    pycode = f"open({str(marker)!r}, 'w').close()"
    wrap = lambda payload: Asm().dict({"v_template": payload}).done()  # noqa: E731
    return {
        "os.system": Asm().call("os", "system", cmd).done(),
        "posix.system": Asm().call("posix", "system", cmd).done(),
        "builtins.eval": Asm().call("builtins", "eval", pycode).done(),
        "__builtin__.eval (py2 name)": Asm().call("__builtin__", "eval", pycode).done(),
        "builtins.exec": Asm().call("builtins", "exec", pycode).done(),
        "subprocess.Popen": Asm().call("subprocess", "Popen", ("touch", str(marker))).done(),
        "subprocess.check_call": Asm().call("subprocess", "check_call", ("touch", str(marker))).done(),
        "os.system, protocol 4 STACK_GLOBAL": Asm(4).stack_glob("os", "system").tuple(cmd).op(b"R").done(),
        "inside a dict value": wrap(sub().call("os", "system", cmd)),
        "inside a chumpy object's state": Asm()
        .newobj("chumpy.ch", "Ch", {"x": sub().call("os", "system", cmd)})
        .done(),
        "builtins.getattr chain": Asm().call("builtins", "getattr", sub().glob("os", "path"), "join").done(),
        "pickle.loads of a nested payload": Asm()
        .call("pickle", "loads", pickle.dumps(None) + b"")  # noqa: S301 - the name alone is refused
        .done(),
        "torch.load": Asm().call("torch", "load", "x.pt").done(),
        "numpy.load with allow_pickle": Asm().call("numpy", "load", "x.npy").done(),
        "chumpy-named module prefix trick": Asm().call("chumpyx", "system", cmd).done(),
    }


def _assert_refused(path: Path, marker: Path, *words: str) -> None:
    with pytest.raises(InputError) as ei:
        load_mano_pkl(path)
    msg = str(ei.value)
    assert str(path) in msg and "mano.is.tue.mpg.de" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("name", list(_payloads(Path("m"))))
def test_payloads_are_refused_and_never_run(tmp_path, name):
    marker = tmp_path / "pwned"
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(_payloads(marker)[name])
    with pytest.raises(UnsafePickleError):
        loads_mano_pickle(path.read_bytes())
    _assert_refused(path, marker, "refused to load")


def _reduce_payloads() -> dict[str, tuple[bytes, str]]:
    """Allowed names called with arguments MANO files never use."""
    return {
        "_codecs.encode with another codec": (Asm().call("_codecs", "encode", "abc", "rot13").done(), "rot13"),
        "_reconstruct of a chumpy class": (
            Asm().glob("numpy.core.multiarray", "_reconstruct").op(b"(").glob("chumpy.ch", "Ch")
            .tuple(0).py2str(b"b").op(b"tR").done(),
            "only numpy.ndarray",
        ),
        "huge array requested through _reconstruct": (
            Asm().dict({"v_template": sub().glob("numpy.core.multiarray", "_reconstruct").op(b"(")
                        .glob("numpy", "ndarray").tuple(10**12, 10**6).py2str(b"f8").op(b"tR")}).done(),
            "'v_template' has shape (0,)",
        ),
        "csc_matrix constructed with a giant shape": (
            Asm().call("scipy.sparse.csc", "csc_matrix", (10**9, 10**9)).done(), "constructed with arguments"
        ),
        "copy_reg._reconstructor of a builtin": (
            Asm().call("copy_reg", "_reconstructor", sub().glob("__builtin__", "set"),
                       sub().glob("__builtin__", "set"), sub().op(b"]")).done(),
            "only MANO's objects",
        ),
        "numpy.dtype of a non-name": (Asm().call("numpy", "dtype", (1, 2)).done(), "only dtype names"),
        "object-array scalar": (
            Asm().call("numpy.core.multiarray", "scalar", sub().call("numpy", "dtype", b"O", 0, 1), b"x").done(),
            "object arrays",
        ),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(_reduce_payloads()))
def test_allowed_names_with_harmful_arguments_are_refused(tmp_path, name):
    data, words = _reduce_payloads()[name]
    path = tmp_path / "MANO_LEFT.pkl"
    path.write_bytes(data)
    with pytest.raises(InputError) as ei:
        load_mano_pkl(path)
    assert str(path) in str(ei.value) and words in str(ei.value), str(ei.value)


def test_malformed_sparse_regressor_is_caught_before_densifying(tmp_path):
    """Out-of-range indices would make SciPy's C++ kernels read out of bounds: the format is checked first."""
    arrays = make_mano_arrays(2)
    data = mano_2017(arrays)
    path = tmp_path / "MANO_RIGHT.pkl"
    import scipy.sparse

    reg = scipy.sparse.csc_matrix(arrays["J_regressor"])
    bad_indices = reg.indices.astype(np.int32).copy()
    bad_indices[3] = 10**6
    good = np.ascontiguousarray(reg.indices.astype(np.int32)).tobytes()
    assert data.count(good) == 1
    path.write_bytes(data.replace(good, bad_indices.tobytes()))
    with pytest.raises(InputError) as ei:
        load_mano_pkl(path)
    assert "'J_regressor'" in str(ei.value) and str(path) in str(ei.value)


def test_oversized_file_is_not_read(tmp_path, monkeypatch):
    import mvhand.mano_pickle as mp

    monkeypatch.setattr(mp, "MAX_MANO_PICKLE_BYTES", 1000)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(make_mano_arrays(1), protocol=2))
    with pytest.raises(InputError, match="more than any MANO file"):
        load_mano_pkl(path)


def test_synthetic_files_are_marked(mano_dir, tmp_path):
    for name in ("MANO_LEFT.pkl", "MANO_RIGHT.pkl"):
        assert is_synthetic_mano(mano_dir / name)
        raw = loads_mano_pickle((mano_dir / name).read_bytes())
        assert "synthetic" in raw[SYNTHETIC_MARKER_KEY]
    real_like = tmp_path / "MANO_RIGHT.pkl"
    real_like.write_bytes(mano_2017(make_mano_arrays(0)))
    assert not is_synthetic_mano(real_like)
    assert not is_synthetic_mano(tmp_path / "missing.pkl")
