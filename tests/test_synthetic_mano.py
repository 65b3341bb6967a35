"""Tests of the synthetic MANO-format model (mvhand.synthetic.mano_model)."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import scipy.sparse
import torch

from mvhand.io_utils import InputError
from mvhand.synthetic.mano_model import (
    FINGER_MANO_JOINTS,
    MANO_PARENTS,
    TIP_VERTEX_IDS,
    WRIST_OFFSET_LEFT,
    _design_joints_mm,
    build_synthetic_mano,
    hinge_axes_left,
    mirror_pose,
    write_synthetic_mano,
)


@pytest.fixture(scope="module")
def arrays():
    return build_synthetic_mano(0)


@pytest.fixture(scope="module")
def smplx_layers(mano_dir):
    smplx = pytest.importorskip("smplx")
    out = {}
    for side, name in (("right", "MANO_RIGHT.pkl"), ("left", "MANO_LEFT.pkl")):
        out[side] = smplx.create(
            str(mano_dir / name),
            "mano",
            use_pca=True,
            num_pca_comps=15,
            is_rhand=side == "right",
            flat_hand_mean=False,
        )
    return out


def test_keys_shapes_dtypes(arrays, mano_dir):
    for side in ("right", "left"):
        a = arrays[side]
        assert a["v_template"].shape == (778, 3) and a["v_template"].dtype == np.float64
        assert a["f"].shape == (1538, 3) and a["f"].dtype == np.uint32
        assert a["shapedirs"].shape == (778, 3, 10)
        assert a["posedirs"].shape == (778, 3, 135)
        assert scipy.sparse.isspmatrix_csc(a["J_regressor"]) and a["J_regressor"].shape == (16, 778)
        assert a["weights"].shape == (778, 16)
        assert a["kintree_table"].dtype == np.uint32 and a["kintree_table"].shape == (2, 16)
        assert a["kintree_table"][0, 0] == 2**32 - 1
        assert tuple(a["kintree_table"][0, 1:]) == MANO_PARENTS[1:]
        assert a["hands_components"].shape == (45, 45) and a["hands_mean"].shape == (45,)
        assert a["hands_coeffs"].shape == (1554, 45) and a["J"].shape == (16, 3)
        assert a["bs_style"] == "lbs" and a["bs_type"] == "lrotmin"
        with open(mano_dir / f"MANO_{side.upper()}.pkl", "rb") as fh:
            raw = fh.read()
        assert raw[:2] == b"\x80\x02"  # pickle protocol 2
        loaded = pickle.loads(raw, encoding="latin1")
        np.testing.assert_array_equal(loaded["v_template"], a["v_template"])


def test_wrist_away_from_origin_and_proportions(arrays):
    J = arrays["right"]["J"]
    np.testing.assert_allclose(J[0], WRIST_OFFSET_LEFT * [-1, 1, 1], atol=1e-9)
    assert np.linalg.norm(J[0]) > 0.05
    v = arrays["right"]["v_template"]
    assert abs(np.linalg.norm(v[443] - J[0]) - 0.190) < 0.003  # wrist → middle tip
    assert abs(np.linalg.norm(J[4] - J[0]) - 0.097) < 0.002  # wrist → middle MCP
    assert abs(np.linalg.norm(J[1] - J[7]) - 0.064) < 0.002  # index MCP ↔ pinky MCP


def test_mesh_topology_and_orientation(arrays):
    for side in ("right", "left"):
        f = arrays[side]["f"].astype(int)
        v = arrays[side]["v_template"]
        assert len(np.unique(f)) == 778 and f.max() < 778
        directed = collections.Counter()
        for a, b, c in f:
            for e in ((a, b), (b, c), (c, a)):
                directed[e] += 1
        assert max(directed.values()) == 1  # consistent winding, manifold
        boundary = [e for e in directed if (e[1], e[0]) not in directed]
        assert len(boundary) == 16  # the open wrist, like the real MANO mesh
        J0 = arrays[side]["J"][0]
        assert np.abs(v[np.unique(np.array(boundary))][:, 0] - J0[0]).max() < 1e-9
        vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
        assert vol > 1e-4  # outward normals (> 100 cm³)


def test_regressor_is_convex_and_reproduces_joints(arrays):
    J_design = (_design_joints_mm()[0]) * 1e-3 + WRIST_OFFSET_LEFT
    for side in ("right", "left"):
        R = arrays[side]["J_regressor"].toarray()
        assert (R >= 0).all()
        np.testing.assert_allclose(R.sum(1), 1.0, atol=1e-12)
        assert ((R > 0).sum(1) >= 3).all()
        J = R @ arrays[side]["v_template"]
        np.testing.assert_allclose(J, arrays[side]["J"], atol=1e-12)
        expect = J_design * ([-1, 1, 1] if side == "right" else 1)
        np.testing.assert_allclose(J, expect, atol=1e-6)


def test_skinning_weights(arrays):
    w = arrays["right"]["weights"]
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
    # every joint drives some vertices; the tips are rigid on their distal joint
    assert (w.max(0) > 0.5).all()
    for f, tip in enumerate(TIP_VERTEX_IDS):
        assert w[tip, FINGER_MANO_JOINTS[f][2]] == 1.0


def test_tips_are_distal_extremes(arrays):
    v = arrays["left"]["v_template"]
    J = arrays["left"]["J"]
    w = arrays["left"]["weights"]
    for f, tip in enumerate(TIP_VERTEX_IDS):
        distal = FINGER_MANO_JOINTS[f][2]
        d = v[tip] - J[distal]
        d /= np.linalg.norm(d)
        seg = np.nonzero(w[:, distal] > 0.5)[0]
        assert tip in seg
        proj = (v[seg] - J[distal]) @ d
        assert proj.argmax() == list(seg).index(tip)
        assert proj.max() > 0.015


def test_loads_with_smplx_and_mvhand(arrays, mano_dir, smplx_layers, mano_model):
    assert not mano_model.shapedirs_fixed  # exact mirror: the toolkit's detector does not fire
    left_x = arrays["left"]["shapedirs"][:, 0, :]
    assert np.abs(left_x - arrays["right"]["shapedirs"][:, 0, :]).sum() > 1
    rng = np.random.default_rng(1)
    B = 4
    theta = rng.normal(0, 1, (B, 15))
    betas = rng.normal(0, 1, (B, 10))
    orient = rng.normal(0, 1, (B, 3))
    transl = rng.normal(0, 0.2, (B, 3))
    for side in ("right", "left"):
        out = smplx_layers[side](
            betas=torch.tensor(betas, dtype=torch.float32),
            global_orient=torch.tensor(orient, dtype=torch.float32),
            hand_pose=torch.tensor(theta, dtype=torch.float32),
            transl=torch.tensor(transl, dtype=torch.float32),
        )
        verts, joints = mano_model.layer(side).forward_full(theta, orient, transl, betas)
        np.testing.assert_allclose(out.vertices.detach().numpy(), verts.detach().numpy(), atol=2e-6)
        np.testing.assert_allclose(out.joints.detach().numpy(), joints.detach().numpy(), atol=2e-6)


def test_rest_joints_with_flat_hand(mano_dir, arrays):
    smplx = pytest.importorskip("smplx")
    m = smplx.create(
        str(mano_dir / "MANO_RIGHT.pkl"), "mano", use_pca=False, flat_hand_mean=True, is_rhand=True
    )
    out = m(betas=torch.zeros(1, 10), global_orient=torch.zeros(1, 3), hand_pose=torch.zeros(1, 45))
    np.testing.assert_allclose(out.joints[0].detach().numpy(), arrays["right"]["J"], atol=1e-6)
    np.testing.assert_allclose(out.vertices[0].detach().numpy(), arrays["right"]["v_template"], atol=1e-6)


def test_left_is_exact_mirror(smplx_layers):
    rng = np.random.default_rng(2)
    B = 5
    theta = torch.tensor(rng.normal(0, 1.5, (B, 15)), dtype=torch.float32)
    betas = torch.tensor(rng.normal(0, 1.5, (B, 10)), dtype=torch.float32)
    orient = torch.tensor(rng.normal(0, 1, (B, 3)), dtype=torch.float32)
    transl = torch.tensor(rng.normal(0, 0.3, (B, 3)), dtype=torch.float32)
    sign = torch.tensor([-1.0, 1.0, 1.0])
    r = smplx_layers["right"](betas=betas, global_orient=orient, hand_pose=theta, transl=transl)
    lo = smplx_layers["left"](
        betas=betas, global_orient=-orient * sign, hand_pose=theta, transl=transl * sign
    )
    np.testing.assert_allclose(lo.vertices.detach().numpy(), (r.vertices * sign).detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(lo.joints.detach().numpy(), (r.joints * sign).detach().numpy(), atol=1e-6)


def test_pose_pca(arrays):
    a = arrays["right"]
    C = a["hands_components"]
    np.testing.assert_allclose(C @ C.T, np.eye(45), atol=1e-10)
    ev = (a["hands_coeffs"] ** 2).sum(0)
    assert np.all(np.diff(ev) <= 1e-9)  # sorted by explained variance
    frac = np.cumsum(ev) / ev.sum()
    assert frac[0] > 0.4 and frac[5] > 0.85 and frac[14] > 0.95
    # the corpus the PCA came from is centred on hands_mean
    np.testing.assert_allclose(a["hands_coeffs"].mean(0), 0.0, atol=1e-10)
    # hands_mean = relaxed slight flexion about each finger's flexion axes (left frame)
    left_mean = arrays["left"]["hands_mean"].reshape(15, 3)
    np.testing.assert_allclose(left_mean.ravel(), mirror_pose(a["hands_mean"]), atol=0)
    J = (arrays["left"]["J"] - arrays["left"]["J"][0]) * 1e3
    tips = (arrays["left"]["v_template"][list(TIP_VERTEX_IDS)] - arrays["left"]["J"][0]) * 1e3
    axes = hinge_axes_left(J, tips)
    for f in range(1, 5):
        mj = FINGER_MANO_JOINTS[f]
        pip = left_mean[mj[1] - 1] @ axes[4 * f + 2]
        assert 0.15 < pip < 0.8
    # the first component is a closure synergy: all four PIP flexions move together
    first = mirror_pose(C[0]).reshape(15, 3)
    pips = [first[FINGER_MANO_JOINTS[f][1] - 1] @ axes[4 * f + 2] for f in range(1, 5)]
    assert np.all(np.sign(pips) == np.sign(pips[0])) and min(abs(p) for p in pips) > 0.1


def test_shape_blend_shapes(arrays):
    sd = arrays["right"]["shapedirs"]
    per_beta = np.abs(sd).max(axis=(0, 1))
    assert np.all(per_beta > 5e-4) and np.all(per_beta < 8e-3)  # mm-scale per unit β
    v = arrays["right"]["v_template"]
    J = arrays["right"]["J_regressor"]
    length = lambda vv: np.linalg.norm(vv[443] - J @ vv, axis=-1)[0]  # noqa: E731
    assert length(v + sd[:, :, 0]) > length(v) * 1.02  # β0 scales the hand
    assert length(v + sd[:, :, 1]) > length(v) + 0.003  # β1 lengthens the fingers
    width = lambda vv: np.linalg.norm((J @ vv)[1] - (J @ vv)[7])  # noqa: E731
    assert width(v + sd[:, :, 2]) > width(v) + 0.002  # β2 widens the palm


def test_deterministic(arrays):
    again = build_synthetic_mano(0)
    other = build_synthetic_mano(1)
    for k in ("v_template", "shapedirs", "weights", "hands_components", "hands_mean", "hands_coeffs"):
        np.testing.assert_array_equal(again["right"][k], arrays["right"][k])
    assert not np.array_equal(other["right"]["hands_coeffs"], arrays["right"]["hands_coeffs"])
    np.testing.assert_array_equal(other["right"]["v_template"], arrays["right"]["v_template"])


def test_write_rejects_a_file_as_folder(tmp_path):
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    with pytest.raises(InputError, match="not_a_dir"):
        write_synthetic_mano(target)
    paths = write_synthetic_mano(tmp_path / "new" / "mano")
    assert paths["right"].name == "MANO_RIGHT.pkl" and paths["left"].exists()
    assert not list((tmp_path / "new" / "mano").glob("*.tmp*"))
