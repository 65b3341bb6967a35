"""Tests for mvhand.geometry.mano: loader (chumpy-free), smplx equivalence, landmark-only path, shapedirs fix."""

from __future__ import annotations

import copy
import pickle
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from fixtures import FLOAT_KEYS, make_mano_arrays

from mvhand.constants import LANDMARKS_TO_EVAL
from mvhand.geometry import mano
from mvhand.geometry.mano import (
    MANO_PARENTS,
    MANO_TIP_VERTEX_IDS,
    MANO_TO_CANONICAL,
    ManoModel,
    load_mano_pkl,
)
from mvhand.geometry.transforms import rodrigues
from mvhand.io_utils import InputError

smplx = pytest.importorskip("smplx")

# --------------------------------------------------------------------------------------------------
# Fixture: a small, well-formed random MANO model (official shapes)
# --------------------------------------------------------------------------------------------------


def mirror_arrays(right: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    """Proper left-hand mirror of ``right`` (x negated, axis-angle y/z negated), other noise changed."""
    left = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in right.items()}
    left["v_template"][:, 0] *= -1
    left["shapedirs"][:, 0, :] *= -1
    left["J"][:, 0] *= -1
    left["f"] = right["f"][:, ::-1].copy()
    sign = np.tile([1.0, -1.0, -1.0], 15)
    left["hands_components"] = right["hands_components"] * sign
    left["hands_mean"] = right["hands_mean"] * sign
    left["posedirs"] = right["posedirs"] + np.random.default_rng(seed).normal(
        0, 1e-4, right["posedirs"].shape
    )
    return left


def write_pkl(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    return path


@pytest.fixture(scope="module")
def rand_mano_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mano")
    right = make_mano_arrays(0)
    write_pkl(d / "MANO_RIGHT.pkl", right)
    write_pkl(d / "MANO_LEFT.pkl", mirror_arrays(right))
    return d


@pytest.fixture(scope="module")
def model(rand_mano_dir) -> ManoModel:
    return ManoModel.from_dir(rand_mano_dir)


@pytest.fixture(scope="module")
def smplx_layers(rand_mano_dir) -> dict[int, torch.nn.Module]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            side: smplx.create(
                str(rand_mano_dir / name),
                "mano",
                use_pca=True,
                num_pca_comps=15,
                is_rhand=side == 1,
                flat_hand_mean=False,
            )
            for side, name in ((0, "MANO_LEFT.pkl"), (1, "MANO_RIGHT.pkl"))
        }


def random_params(B: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "pose_pca": torch.randn(B, 15, generator=g) * 1.5,
        "global_orient": torch.randn(B, 3, generator=g) * 1.2,
        "transl": torch.randn(B, 3, generator=g) * 0.3,
        "betas": torch.randn(B, 10, generator=g) * 2.0,
    }


def smplx_landmarks(layer, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    out = layer(
        betas=p["betas"], global_orient=p["global_orient"], hand_pose=p["pose_pca"], transl=p["transl"]
    )
    pts = torch.cat([out.joints, out.vertices[:, list(MANO_TIP_VERTEX_IDS)]], dim=1)
    return pts[:, list(MANO_TO_CANONICAL)], out.vertices


# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------


def test_constants():
    assert LANDMARKS_TO_EVAL == (0, 1, 2, 3, 4, *range(6, 20))
    assert sorted(MANO_TO_CANONICAL) == [i for i in range(21) if i != 13]  # thumb CMC dropped
    assert MANO_TO_CANONICAL[5] == 0  # wrist
    assert MANO_TO_CANONICAL[:5] == (16, 17, 18, 19, 20)
    assert MANO_TIP_VERTEX_IDS == (744, 320, 443, 554, 671)
    assert MANO_PARENTS == (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)


# --------------------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------------------


def test_load_plain_pickle(tmp_path):
    data = make_mano_arrays(3)
    got = load_mano_pkl(write_pkl(tmp_path / "MANO_RIGHT.pkl", data))
    for key in FLOAT_KEYS:
        np.testing.assert_array_equal(got[key], data[key])
    np.testing.assert_array_equal(got["f"], data["f"].astype(np.int64))
    assert got["f"].dtype == np.int64
    assert got["kintree_table"].dtype == np.int64
    assert got["kintree_table"][0].tolist() == list(MANO_PARENTS)
    assert "J" not in got and "bs_style" not in got


def _chumpy_pickle(path: Path, data: dict, wrap: tuple[str, ...], attr: str = "x") -> None:
    """Pickle ``data`` with the keys in ``wrap`` as fake ``chumpy.ch.Ch`` objects (state {attr: ...})."""
    pkg = types.ModuleType("chumpy")
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            setattr(self, attr, x)
            self._dirty_vars = set()  # chumpy objects carry more state than the array

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch_mod.Ch = Ch
    pkg.ch = ch_mod
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, ch_mod
    try:
        obj = {k: (Ch(v) if k in wrap else v) for k, v in data.items()}
        write_pkl(path, obj)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_load_chumpy_and_sparse_pickle(tmp_path):
    data = make_mano_arrays(4)
    official = dict(data, J_regressor=scipy.sparse.csc_matrix(data["J_regressor"]))
    path = tmp_path / "MANO_LEFT.pkl"
    _chumpy_pickle(path, official, wrap=("shapedirs", "v_template", "hands_mean"))
    assert "chumpy" not in sys.modules
    with open(path, "rb") as fh, pytest.raises(ModuleNotFoundError):  # proves the file needs chumpy
        pickle.load(fh, encoding="latin1")
    got = load_mano_pkl(path)
    for key in ("v_template", "shapedirs", "J_regressor", "hands_mean", "posedirs"):
        assert isinstance(got[key], np.ndarray)
        np.testing.assert_array_equal(got[key], data[key])
    assert "chumpy" not in sys.modules


def test_load_chumpy_expression_without_array(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    _chumpy_pickle(path, make_mano_arrays(5), wrap=("posedirs",), attr="a")
    with pytest.raises(InputError) as ei:
        load_mano_pkl(path)
    _check_msg(ei.value, path, "'posedirs'")


def _check_msg(err: InputError, path: Path, *words: str) -> None:
    msg = str(err)
    assert str(path) in msg
    assert "`mano_dir`" in msg and "MANO_LEFT.pkl" in msg and "mano.is.tue.mpg.de" in msg
    for w in words:
        assert w in msg, (w, msg)


def test_load_missing_and_unreadable(tmp_path):
    missing = tmp_path / "MANO_RIGHT.pkl"
    with pytest.raises(InputError) as ei:
        load_mano_pkl(missing)
    _check_msg(ei.value, missing, "not found")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle at all")
    with pytest.raises(InputError) as ei:
        load_mano_pkl(garbage)
    _check_msg(ei.value, garbage, "cannot read")
    truncated = tmp_path / "trunc.pkl"
    truncated.write_bytes(pickle.dumps(make_mano_arrays(0), protocol=2)[:5000])
    with pytest.raises(InputError) as ei:
        load_mano_pkl(truncated)
    _check_msg(ei.value, truncated, "cannot read")
    listy = write_pkl(tmp_path / "list.pkl", [1, 2, 3])
    with pytest.raises(InputError) as ei:
        load_mano_pkl(listy)
    _check_msg(ei.value, listy, "list")


@pytest.mark.parametrize(
    "key",
    [
        "v_template",
        "f",
        "shapedirs",
        "posedirs",
        "J_regressor",
        "weights",
        "kintree_table",
        "hands_components",
        "hands_mean",
    ],
)
def test_load_missing_key(tmp_path, key):
    data = make_mano_arrays(0)
    del data[key]
    path = write_pkl(tmp_path / "MANO_RIGHT.pkl", data)
    with pytest.raises(InputError) as ei:
        load_mano_pkl(path)
    _check_msg(ei.value, path, f"'{key}'", "no key")


@pytest.mark.parametrize(
    ("key", "bad", "expected"),
    [
        ("v_template", np.zeros((777, 3)), "(778, 3)"),
        ("f", np.zeros((1538, 4), dtype=np.uint32), "(1538, 3)"),
        ("shapedirs", np.zeros((778, 3, 9)), "(778, 3, ≥10)"),
        ("shapedirs", np.zeros((778, 30)), "(778, 3, ≥10)"),
        ("posedirs", np.zeros((778, 3, 134)), "(778, 3, 135)"),
        ("J_regressor", np.zeros((21, 778)), "(16, 778)"),
        ("weights", np.zeros((16, 778)), "(778, 16)"),
        ("kintree_table", np.zeros((16,), dtype=np.int64), "(2, 16)"),
        ("hands_components", np.zeros((45, 44)), "(45, 45)"),
        ("hands_mean", np.zeros((48,)), "(45,)"),
    ],
)
def test_load_wrong_shape(tmp_path, key, bad, expected):
    data = make_mano_arrays(0)
    data[key] = bad
    path = write_pkl(tmp_path / "MANO_LEFT.pkl", data)
    with pytest.raises(InputError) as ei:
        load_mano_pkl(path)
    _check_msg(ei.value, path, f"'{key}'", str(tuple(bad.shape)), expected)


def test_load_bad_values(tmp_path):
    data = make_mano_arrays(0)
    data["posedirs"] = data["posedirs"].copy()
    data["posedirs"][3, 1, 7] = np.nan
    path = write_pkl(tmp_path / "MANO_LEFT.pkl", data)
    with pytest.raises(InputError) as ei:
        load_mano_pkl(path)
    _check_msg(ei.value, path, "'posedirs'", "non-finite")

    valid = load_mano_pkl(write_pkl(tmp_path / "valid.pkl", make_mano_arrays(0)))
    for parents in (
        [2**32 - 1, 0, 1, 2, 0, 9, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14],  # parent after the child: no chain
        [2**32 - 1, 0, 1, 2, 3, 0, 5, 0, 7, 1, 9, 10, 4, 12, 13, 6],  # a valid tree, but not MANO's
    ):
        data = make_mano_arrays(0)
        data["kintree_table"] = np.stack([np.array(parents), np.arange(16)]).astype(np.uint32)
        path = write_pkl(tmp_path / "MANO_RIGHT.pkl", data)
        with pytest.raises(InputError) as ei:
            load_mano_pkl(path)
        _check_msg(ei.value, path, "'kintree_table'", "not the MANO kinematic tree", str(list(MANO_PARENTS)))
        arrays = dict(valid, kintree_table=np.stack([np.array(parents), np.arange(16)]))
        with pytest.raises(ValueError, match="MANO kinematic tree"):
            mano.ManoLayer(arrays, is_right=True)  # arrays that did not come through load_mano_pkl

    data = make_mano_arrays(0)
    data["f"] = data["f"].astype(np.int64)
    data["f"][0, 0] = 778
    path = write_pkl(tmp_path / "MANO_RIGHT.pkl", data)
    with pytest.raises(InputError) as ei:
        load_mano_pkl(path)
    _check_msg(ei.value, path, "'f'")

    data = make_mano_arrays(0)
    data["hands_mean"] = np.array(["a"] * 45)
    path = write_pkl(tmp_path / "MANO_RIGHT.pkl", data)
    with pytest.raises(InputError) as ei:
        load_mano_pkl(path)
    _check_msg(ei.value, path, "'hands_mean'", "dtype")


def test_from_dir_errors(tmp_path):
    with pytest.raises(InputError) as ei:
        ManoModel.from_dir(tmp_path / "nope")
    _check_msg(ei.value, tmp_path / "nope", "folder not found")
    write_pkl(tmp_path / "MANO_RIGHT.pkl", make_mano_arrays(0))
    with pytest.raises(InputError) as ei:
        ManoModel.from_dir(tmp_path)
    _check_msg(ei.value, tmp_path / "MANO_LEFT.pkl", "not found")


# --------------------------------------------------------------------------------------------------
# Forward: smplx equivalence, landmark-only path, gradients
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "B"), [(0, 64), (1, 64), (1, 3), (0, 1)])
def test_matches_smplx(model, smplx_layers, side, B):
    p = random_params(B, seed=10 + side + B)
    layer = model.layer(side)
    ref_lm, ref_verts = smplx_landmarks(smplx_layers[side], p)
    with torch.no_grad():
        lm = layer.landmarks(**p)
        verts, joints = layer.forward_full(**p)
        lm_full = layer.landmarks_from_full(**p)
    assert lm.shape == (B, 20, 3) and lm.dtype == torch.float32
    assert verts.shape == (B, 778, 3) and joints.shape == (B, 16, 3)
    assert (ref_lm - ref_lm.mean()).abs().max() > 0.05  # non-trivial configurations
    assert (lm - ref_lm).abs().max() <= 1e-5
    assert (lm_full - ref_lm).abs().max() <= 1e-5
    assert (verts - ref_verts.detach()).abs().max() <= 1e-5
    assert (lm - lm_full).abs().max() <= 1e-5


def numpy_lbs(data: dict, pose48: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 MANO forward written from spec/formats.md §5.3 (no smplx, no translation): verts, joints."""
    v_sh = data["v_template"] + data["shapedirs"][:, :, :10] @ beta
    J = data["J_regressor"] @ v_sh
    Rs = []
    for i in range(16):
        r = pose48[3 * i : 3 * i + 3]
        ang = np.linalg.norm(r + 1e-8)
        k = r / ang
        K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        Rs.append(np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K)
    feat = np.concatenate([(R - np.eye(3)).ravel() for R in Rs[1:]])
    v_posed = v_sh + data["posedirs"] @ feat
    G = [np.eye(4)] * 16
    for i in range(16):
        local = np.eye(4)
        local[:3, :3] = Rs[i]
        local[:3, 3] = J[i] - (J[MANO_PARENTS[i]] if i else 0)
        G[i] = local if i == 0 else G[MANO_PARENTS[i]] @ local
    A = np.stack([g - np.pad((g @ np.r_[J[i], 0.0])[:, None], ((0, 0), (3, 0))) for i, g in enumerate(G)])
    T = np.einsum("vj,jab->vab", data["weights"], A)
    verts = np.einsum("vab,vb->va", T[:, :3, :3], v_posed) + T[:, :3, 3]
    return verts, np.stack([g[:3, 3] for g in G])


def test_matches_independent_numpy(model):
    data = make_mano_arrays(0)
    p = random_params(3, seed=5)
    lm = model.right.landmarks(**p).detach().numpy()
    for b in range(3):
        h = p["pose_pca"][b].double().numpy() @ data["hands_components"][:15]
        pose48 = (
            np.concatenate([p["global_orient"][b].double().numpy(), h]) + np.r_[0, 0, 0, data["hands_mean"]]
        )
        verts, joints = numpy_lbs(data, pose48, p["betas"][b].double().numpy())
        pts = np.concatenate([joints, verts[list(MANO_TIP_VERTEX_IDS)]])
        ref = pts[list(MANO_TO_CANONICAL)] + p["transl"][b].double().numpy()
        np.testing.assert_allclose(lm[b], ref, atol=1e-5)


def test_rotation_matrix_orient_and_broadcast(model):
    p = random_params(8, seed=3)
    layer = model.right
    R = torch.as_tensor(rodrigues(p["global_orient"].double().numpy()), dtype=torch.float32)
    lm_aa = layer.landmarks(**p)
    lm_R = layer.landmarks(p["pose_pca"], R, p["transl"], p["betas"])
    assert (lm_aa - lm_R).abs().max() <= 1e-5
    v_aa, _ = layer.forward_full(**p)
    v_R, _ = layer.forward_full(p["pose_pca"], R, p["transl"], p["betas"])
    assert (v_aa - v_R).abs().max() <= 1e-5
    # One beta vector for the whole batch, as in the pose track.
    lm_b = layer.landmarks(p["pose_pca"], p["global_orient"], p["transl"], p["betas"][0])
    lm_ref = layer.landmarks(p["pose_pca"], p["global_orient"], p["transl"], p["betas"][:1].expand(8, 10))
    assert torch.equal(lm_b, lm_ref)
    with pytest.raises(ValueError, match="pose_pca"):
        layer.landmarks(torch.zeros(8, 12), p["global_orient"], p["transl"], p["betas"])
    with pytest.raises(ValueError, match="transl"):
        layer.landmarks(p["pose_pca"], p["global_orient"], torch.zeros(5, 3), p["betas"])


def test_gradients_agree(model):
    layer = model.left
    base = random_params(16, seed=7)
    w = torch.randn(16, 20, 3, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (layer.landmarks, layer.landmarks_from_full):
        p = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        (fn(**p) * w).sum().backward()
        grads.append({k: v.grad for k, v in p.items()})
    for k in base:
        g_fast, g_full = grads[0][k], grads[1][k]
        assert g_fast is not None and g_fast.abs().max() > 1e-3, k
        torch.testing.assert_close(g_fast, g_full, atol=2e-4, rtol=1e-4)


def test_gradients_match_smplx(model, smplx_layers):
    base = random_params(4, seed=8)
    grads = []
    p = {k: v.clone().requires_grad_(True) for k, v in base.items()}
    model.right.landmarks(**p).sum().backward()
    grads.append({k: v.grad for k, v in p.items()})
    p = {k: v.clone().requires_grad_(True) for k, v in base.items()}
    smplx_landmarks(smplx_layers[1], p)[0].sum().backward()
    grads.append({k: v.grad for k, v in p.items()})
    for k in base:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=2e-4, rtol=1e-4)


def test_root_joint(model):
    data = make_mano_arrays(0)
    p = random_params(5, seed=9)
    root = model.right.root_joint(p["betas"])
    v_shaped = data["v_template"] + np.einsum("vck,bk->bvc", data["shapedirs"], p["betas"].double().numpy())
    ref = np.einsum("v,bvc->bc", data["J_regressor"][0], v_shaped)
    np.testing.assert_allclose(root.detach().numpy(), ref, atol=1e-6)
    # Posed world wrist = J0(beta) + transl for any pose (rotation about the shaped wrist).
    lm = model.right.landmarks(**p)
    torch.testing.assert_close(lm[:, 5], root + p["transl"], atol=1e-6, rtol=0)


def test_large_batch(model):
    B = 20000
    p = random_params(B, seed=11)
    with torch.no_grad():
        lm = model.left.landmarks(**p)
        sub = model.left.landmarks(**{k: v[-7:] for k, v in p.items()})
    assert lm.shape == (B, 20, 3)
    assert torch.isfinite(lm).all()
    torch.testing.assert_close(lm[-7:], sub, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------------
# ManoModel: sides, shapedirs fix, shape metric
# --------------------------------------------------------------------------------------------------


def test_landmarks_from_wrist_xform_mixed_sides(model):
    p = random_params(10, seed=12)
    wx = torch.cat([p["global_orient"], p["transl"]], dim=1)
    sides = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1, 1, 1])
    lm = model.landmarks_from_wrist_xform(p["pose_pca"], wx, p["betas"], sides)
    for i, s in enumerate(sides.tolist()):
        ref = model.layer(s).landmarks(
            p["pose_pca"][i : i + 1],
            p["global_orient"][i : i + 1],
            p["transl"][i : i + 1],
            p["betas"][i : i + 1],
        )
        torch.testing.assert_close(lm[i : i + 1], ref, atol=1e-6, rtol=0)
    assert (
        lm[0]
        - model.right.landmarks(p["pose_pca"][:1], p["global_orient"][:1], p["transl"][:1], p["betas"][:1])[0]
    ).abs().max() > 1e-3
    for side, name in ((0, "left"), (1, "right")):
        assert model.layer(name) is model.layer(side)
        a = model.landmarks_from_wrist_xform(p["pose_pca"], wx, p["betas"], name)
        b = model.landmarks_from_wrist_xform(p["pose_pca"], wx, p["betas"], np.full(10, side))
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # Gradients reach every input through the mixed-side scatter.
    q = {k: v.clone().requires_grad_(True) for k, v in (("t", p["pose_pca"]), ("w", wx), ("b", p["betas"]))}
    model.landmarks_from_wrist_xform(q["t"], q["w"], q["b"], sides).sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in q.values())
    with pytest.raises(ValueError):
        model.landmarks_from_wrist_xform(p["pose_pca"], wx, p["betas"], torch.full((10,), 2))
    with pytest.raises(ValueError):
        model.layer("middle")


def test_per_side_splits_and_reassembles(model):
    """per_side runs a layer function on each side's rows and puts the results back in batch order."""
    p = random_params(7, seed=15)
    sides = np.array([1, 0, 0, 1, 1, 0, 1])
    j0 = model.per_side(sides, mano.ManoLayer.root_joint, p["betas"])
    for i, s in enumerate(sides):
        torch.testing.assert_close(j0[i], model.layer(int(s)).root_joint(p["betas"][i : i + 1])[0])
    assert not torch.allclose(j0, model.right.root_joint(p["betas"]))  # the two layers differ
    one = model.per_side(torch.tensor([0]), mano.ManoLayer.root_joint, p["betas"])  # one entry: all rows
    torch.testing.assert_close(one, model.left.root_joint(p["betas"]), atol=0, rtol=0)
    empty = model.per_side(np.zeros(0, int), mano.ManoLayer.landmarks, *(v[:0] for v in p.values()))
    assert empty.shape == (0, 20, 3)
    with pytest.raises(ValueError, match="entries"):
        model.per_side(sides[:3], mano.ManoLayer.root_joint, p["betas"])


def test_shapedirs_fix(tmp_path, rand_mano_dir, model):
    right = make_mano_arrays(0)
    proper = mirror_arrays(right)
    assert not model.shapedirs_fixed
    np.testing.assert_allclose(model.left.shapedirs.numpy(), proper["shapedirs"], atol=1e-7)
    buggy = dict(proper, shapedirs=proper["shapedirs"].copy())
    buggy["shapedirs"][:, 0, :] = right["shapedirs"][:, 0, :]  # left file ships the right x-components
    d = tmp_path / "buggy"
    write_pkl(d / "MANO_RIGHT.pkl", right)
    write_pkl(d / "MANO_LEFT.pkl", buggy)
    fixed = ManoModel.from_dir(d)
    assert fixed.shapedirs_fixed
    np.testing.assert_allclose(fixed.left.shapedirs.numpy(), proper["shapedirs"], atol=1e-7)
    torch.testing.assert_close(
        fixed.shape_vertices(torch.ones(1, 10)), model.shape_vertices(torch.ones(1, 10))
    )
    # Right layer is never touched; threshold is Σ|L_x − R_x| < 1 exactly.
    np.testing.assert_allclose(fixed.right.shapedirs.numpy(), right["shapedirs"], atol=1e-7)
    near = proper["shapedirs"].copy()
    near[:, 0, :] = right["shapedirs"][:, 0, :]
    near[0, 0, 0] += 0.99
    assert mano.fix_left_shapedirs(near, right["shapedirs"])[1]
    near[0, 0, 0] += 0.02
    assert not mano.fix_left_shapedirs(near, right["shapedirs"])[1]


def test_shape_vertices_zero_pose(model, smplx_layers):
    """spec/formats.md §7.5: θ_pca = 0 and zero wrist ⇒ the left v_template (shaped) posed with hands_mean."""
    data = mirror_arrays(make_mano_arrays(0))
    betas = torch.randn(3, 10, generator=torch.Generator().manual_seed(2))
    verts = model.shape_vertices(betas)
    assert verts.shape == (3, 778, 3)
    ref = smplx_layers[0](
        betas=betas, global_orient=torch.zeros(3, 3), hand_pose=torch.zeros(3, 15), transl=torch.zeros(3, 3)
    ).vertices
    torch.testing.assert_close(verts, ref, atol=1e-5, rtol=0)
    pose48 = np.r_[0.0, 0.0, 0.0, data["hands_mean"]]
    for b in range(3):
        ref_np, _ = numpy_lbs(data, pose48, betas[b].double().numpy())
        np.testing.assert_allclose(verts[b].numpy(), ref_np, atol=1e-5)
    v0 = model.shape_vertices(torch.zeros(10))[0].numpy()
    np.testing.assert_allclose(v0, numpy_lbs(data, pose48, np.zeros(10))[0], atol=1e-5)
    assert np.abs(v0 - data["v_template"]).max() > 1e-3  # the mean pose is not the flat template


def test_component_major_rodrigues_matches_smplx():
    """The landmark path's Rodrigues (component-major) equals smplx's batch_rodrigues, also at r = 0 and |r| > π."""
    g = torch.Generator().manual_seed(3)
    r = torch.randn(3, 9, generator=g, dtype=torch.float64) * 1.5
    r[:, 0] = 0.0  # θ = |r + 1e-8| keeps this finite
    r[:, 1] = 1e-5
    r[:, 2] = torch.tensor([3.0, -2.5, 1.0], dtype=torch.float64)  # |r| > π
    r[:, 3] = torch.tensor([-1e-8, -1e-8, -1e-8], dtype=torch.float64) + 1e-3  # near the offset
    basis = torch.as_tensor(mano._ROD_BASIS.T, dtype=torch.float64)
    R = mano._rodrigues(r, basis)
    assert R.shape == (3, 3, 9)
    ref = smplx.lbs.batch_rodrigues(r.t())
    torch.testing.assert_close(R.permute(2, 0, 1), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(mano._batch_rodrigues(r.t()), ref, atol=1e-12, rtol=0)
    eye = torch.eye(3, dtype=torch.float64)
    # Orthonormal up to smplx's offset: k = r / |r + 1e-8| is not exactly a unit vector.
    torch.testing.assert_close(torch.einsum("jin,jkn->nik", R, R), eye.expand(9, 3, 3), atol=1e-7, rtol=0)


@pytest.mark.parametrize("orient", ["axis_angle", "rotation_matrix"])
def test_landmarks_match_full_forward_float64(model, orient):
    """In float64 the landmark path and the full-mesh forward agree to rounding (their buffers differ only
    by the float32 rounding of differently folded arrays), for both kinds of global orientation."""
    layer = copy.deepcopy(model.right).double()
    p = {k: v.double() for k, v in random_params(5, seed=40).items()}
    if orient == "rotation_matrix":
        p["global_orient"] = mano._batch_rodrigues(p["global_orient"])
    torch.testing.assert_close(layer.landmarks(**p), layer.landmarks_from_full(**p), atol=1e-7, rtol=0)


def test_buffers_float32_and_to(model):
    assert model.to("cpu") is model
    for layer in (model.left, model.right):
        for name, b in layer.named_buffers():
            assert b.dtype == (torch.int64 if name in ("faces", "lm_out_index") else torch.float32), name
    assert model.left.faces.shape == (1538, 3) and not model.left.is_right and model.right.is_right
    # float64 / numpy inputs are accepted and give float32 outputs on the module's device.
    p = random_params(2, seed=14)
    lm64 = model.right.landmarks(
        *(p[k].double().numpy() for k in ("pose_pca", "global_orient", "transl", "betas"))
    )
    assert lm64.dtype == torch.float32
    torch.testing.assert_close(lm64, model.right.landmarks(**p))


def test_landmarks_float32_under_autocast(model):
    p = random_params(4, seed=42)
    ref = model.right.landmarks(**p)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        lm = model.right.landmarks(**p)
    assert lm.dtype == torch.float32
    torch.testing.assert_close(lm, ref, atol=0, rtol=0)


def test_landmarks_to_eval_is_every_canonical_landmark_but_the_wrist():
    """spec/formats.md §7: 19 of the 20 canonical landmarks are scored; the wrist (canonical index 5, MANO
    joint 0 through MANO_TO_CANONICAL) is not."""
    assert LANDMARKS_TO_EVAL == tuple(i for i in range(20) if i != 5)
    assert MANO_TO_CANONICAL[5] == 0  # the canonical wrist is MANO's root joint


def test_gradients_finite_at_zero_pose(model):
    """Training starts near θ = 0, r = 0: smplx's +1e-8 in the Rodrigues norm keeps gradients finite."""
    p = {k: torch.zeros_like(v).requires_grad_(True) for k, v in random_params(2, seed=0).items()}
    model.right.landmarks(**p).square().sum().backward()
    for k, v in p.items():
        assert torch.isfinite(v.grad).all(), k
    assert p["transl"].grad.abs().sum() > 0 and p["betas"].grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------------
# The project's synthetic MANO-format model (mvhand.synthetic.mano_model), when present
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(request) -> tuple[Path, ManoModel]:
    pytest.importorskip("mvhand.synthetic.mano_model")
    return request.getfixturevalue("mano_dir"), request.getfixturevalue("mano_model")


def test_synthetic_model_matches_smplx(synthetic):
    syn_dir, syn = synthetic
    assert not syn.shapedirs_fixed  # the synthetic left file is a proper mirror
    for side, name in ((0, "MANO_LEFT.pkl"), (1, "MANO_RIGHT.pkl")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = smplx.create(
                str(syn_dir / name),
                "mano",
                use_pca=True,
                num_pca_comps=15,
                is_rhand=side == 1,
                flat_hand_mean=False,
            )
        p = random_params(32, seed=20 + side)
        p["betas"] = p["betas"] * 0.5
        ref_lm, ref_verts = smplx_landmarks(ref, p)
        with torch.no_grad():
            lm = syn.layer(side).landmarks(**p)
            verts, _ = syn.layer(side).forward_full(**p)
        assert (lm - ref_lm).abs().max() <= 1e-5
        assert (verts - ref_verts).abs().max() <= 1e-5


def test_synthetic_left_is_mirror_of_right(synthetic):
    """Mirrored parameters (axis-angle y, z and translation x negated) on the left give x-mirrored output."""
    _, syn = synthetic
    p = random_params(8, seed=30)
    p["betas"] = p["betas"] * 0.5
    m = torch.tensor([-1.0, 1.0, 1.0])
    right = syn.right.landmarks(**p)
    left = syn.left.landmarks(p["pose_pca"], -m * p["global_orient"], m * p["transl"], p["betas"])
    torch.testing.assert_close(left, right * m, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        syn.shape_vertices(p["betas"][:2]),
        syn.left.forward_full(torch.zeros(2, 15), torch.zeros(2, 3), torch.zeros(2, 3), p["betas"][:2])[0],
    )
