import subprocess
import sys

import pytest

from mvhand.io_utils import InputError, atomic_path, atomic_write


def test_plain_timm_import_works_after_guard_in_fresh_interpreter():
    code = "from mvhand._compat import import_timm; t = import_timm(); print(t.create_model('test_resnet').__class__.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ResNet" in out.stdout


def test_atomic_write_success_and_failure(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_write(target) as fh:
        fh.write("{}")
    assert target.read_text() == "{}"
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "{}"  # untouched
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temp file left


def test_atomic_path_keeps_suffix(tmp_path):
    with atomic_path(tmp_path / "a.tar.gz") as tmp:
        assert tmp.name.endswith(".tar.gz")
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.tar.gz").read_bytes() == b"x"


def test_input_error_message():
    err = InputError("data/x.tar", "truncated tar", "re-download it")
    assert "data/x.tar" in str(err) and "re-download" in str(err)


@pytest.mark.parametrize("fix", ["re-download it", None])
def test_input_error_survives_pickling(fix):
    """Worker processes send their errors back pickled: the message, path and fix must survive."""
    import pickle

    err = InputError("data/x.tar", "truncated tar", fix)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is InputError
    assert (str(back), back.path, back.problem, back.fix) == (str(err), "data/x.tar", "truncated tar", fix)
