"""Tests of the z-buffer rasteriser (mvhand.synthetic.render) against analytic ray casting."""

from __future__ import annotations

import numpy as np
import pytest

from mvhand.geometry.cameras import CameraModel
from mvhand.synthetic.render import make_environment, rasterize, render_view, vertex_normals
from mvhand.synthetic.rigs import hot3d_rig, rig_cameras, umetrack_rig


def _sphere(centre, radius, n=40):
    """UV sphere: vertices (V, 3), faces (F, 3)."""
    th = np.linspace(0, np.pi, n)
    ph = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    v = np.stack([np.sin(T) * np.cos(P), np.cos(T), np.sin(T) * np.sin(P)], -1).reshape(-1, 3)
    f = []
    m = 2 * n
    for i in range(n - 1):
        for j in range(m):
            a, b = i * m + j, i * m + (j + 1) % m
            c, d = a + m, b + m
            f += [[a, c, b], [b, c, d]]
    return v * radius + np.asarray(centre), np.array(f)


def _ray_sphere(cam, centre, radius):
    """Analytic per-pixel hit mask and hit distance of the pixel-centre rays (independent of the mesh)."""
    H, W = cam.height, cam.width
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    d = cam.window_to_eye(np.stack([gx, gy], -1))
    c = cam.world_to_eye(np.asarray(centre, np.float64)[None])[0]
    b = d @ c
    disc = b * b - (c @ c - radius**2)
    hit = disc > 0
    t = b - np.sqrt(np.where(hit, disc, 0))
    return hit & (t > 0), t


@pytest.fixture(scope="module")
def ume_cams():
    return rig_cameras(umetrack_rig(), np.eye(4))


def test_sphere_silhouette_and_depth_match_ray_casting(ume_cams):
    cam = ume_cams["1201-1"]
    centre, radius = np.array([-0.06, 0.13, 0.32]), 0.04
    v, f = _sphere(centre, radius)
    res = render_view(cam, [(v, f)], None, np.random.default_rng(0), return_buffers=True)
    mask = res.mesh_id == 0
    hit, t = _ray_sphere(cam, centre, radius)
    iou = (mask & hit).sum() / (mask | hit).sum()
    assert hit.sum() > 2000 and iou > 0.95
    both = mask & hit
    # the polygonal sphere lies inside the true one: rendered depth >= analytic, within the facet sag
    err = res.depth[both] - t[both]
    assert np.median(np.abs(err)) < 0.0015 and err.min() > -0.0005
    # the projected centre falls on the rendered sphere, far pixels do not
    cx, cy = np.rint(cam.world_to_window(centre)).astype(int)
    assert res.mesh_id[cy, cx] == 0
    assert (res.mesh_id[~hit] == 0).mean() < 0.01


def test_nearer_mesh_occludes_farther_one(ume_cams):
    cam = ume_cams["1201-2"]
    far = _sphere([0.06, 0.13, 0.40], 0.05)
    near = _sphere([0.06, 0.13, 0.30], 0.02)
    res = render_view(cam, [far, near], None, np.random.default_rng(0), return_buffers=True)
    c = np.rint(cam.world_to_window(np.array([0.06, 0.13, 0.30]))).astype(int)
    assert res.mesh_id[c[1], c[0]] == 1
    # both orders give the same id buffer (z-test, not painter's order)
    res2 = render_view(cam, [near, far], None, np.random.default_rng(0), return_buffers=True)
    swapped = np.where(res2.mesh_id >= 0, 1 - res2.mesh_id, -1)
    assert (swapped == res.mesh_id).mean() > 0.999
    assert (res.mesh_id == 0).sum() > 0 and (res.mesh_id == 1).sum() > 0


def test_rasterize_single_triangle_matches_point_in_triangle():
    tri = np.array([[3.2, 2.7], [40.6, 9.1], [12.4, 30.3]], np.float32)
    fr = rasterize(tri, np.array([1.0, 2.0, 3.0], np.float32), np.array([[0, 1, 2]]), 48, 36)
    gx, gy = np.meshgrid(np.arange(48), np.arange(36))
    p = np.stack([gx, gy], -1).astype(np.float64)

    def edge(a, b):
        return (b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0])

    e = [edge(tri[0], tri[1]), edge(tri[1], tri[2]), edge(tri[2], tri[0])]
    inside = ((e[0] >= 0) & (e[1] >= 0) & (e[2] >= 0)) | ((e[0] <= 0) & (e[1] <= 0) & (e[2] <= 0))
    got = np.zeros(48 * 36, bool)
    got[fr.pix] = True
    assert (got.reshape(36, 48) != inside).sum() <= 2  # only pixel centres exactly on an edge may differ
    # barycentric depth interpolation reproduces the vertex depths' plane
    pts = np.stack([fr.pix % 48, fr.pix // 48], -1).astype(np.float64)
    np.testing.assert_allclose((fr.bary[:, :, None] * tri[None]).sum(1), pts, atol=1e-3)
    np.testing.assert_allclose(fr.depth, fr.bary @ np.array([1.0, 2.0, 3.0]), atol=1e-5)


def test_meshes_behind_the_camera_are_not_drawn(ume_cams):
    cam = ume_cams["1201-1"]
    behind = _sphere([-0.05, 0.0, -0.3], 0.05)
    res = render_view(cam, [behind], None, np.random.default_rng(0), return_buffers=True)
    assert (res.mesh_id >= 0).sum() == 0


def test_rgb_and_mono_outputs_noise_and_determinism():
    cams = rig_cameras(hot3d_rig("aria"), np.eye(4))
    env = make_environment(np.random.default_rng(1), rgb=True)
    mesh = [_sphere([0.0, 0.15, 0.3], 0.04)]
    rgb = render_view(cams["214-1"], mesh, env, np.random.default_rng(5))
    mono = render_view(cams["1201-2"], mesh, env, np.random.default_rng(5))
    assert rgb.shape == (704, 704, 3) and rgb.dtype == np.uint8
    assert mono.shape == (480, 640) and mono.dtype == np.uint8
    again = render_view(cams["214-1"], mesh, env, np.random.default_rng(5))
    np.testing.assert_array_equal(rgb, again)
    other = render_view(cams["214-1"], mesh, env, np.random.default_rng(6))
    diff = np.abs(other.astype(int) - rgb.astype(int))
    assert 0.5 < diff.mean() < 6  # only the sensor noise differs
    # skin is reddish in RGB: mean R > mean B over the sphere pixels
    res = render_view(cams["214-1"], mesh, env, np.random.default_rng(5), return_buffers=True)
    skin = res.image[res.mesh_id == 0].astype(float)
    assert skin[:, 0].mean() > skin[:, 2].mean() + 10


def test_background_follows_the_camera_rotation():
    env = make_environment(np.random.default_rng(2))
    base = dict(model_type="PinholePlane", width=64, height=48, fx=60.0, fy=60.0, cx=31.5, cy=23.5)
    ang = np.deg2rad(10)
    R = np.array([[np.cos(ang), 0, np.sin(ang)], [0, 1, 0], [-np.sin(ang), 0, np.cos(ang)]])
    T1 = np.eye(4, dtype=np.float32)
    T2 = np.eye(4, dtype=np.float32)
    T2[:3, :3] = R
    kw = dict(noise_sigma=0, vignetting=False, optical_blur=0)
    a = render_view(CameraModel(**base, T_world_from_eye=T1), [], env, np.random.default_rng(0), **kw).astype(
        float
    )
    b = render_view(CameraModel(**base, T_world_from_eye=T2), [], env, np.random.default_rng(0), **kw).astype(
        float
    )
    # a translation of the camera changes nothing (distant environment); a rotation does
    T3 = T1.copy()
    T3[:3, 3] = [0.5, 0.2, -1.0]
    c = render_view(CameraModel(**base, T_world_from_eye=T3), [], env, np.random.default_rng(0), **kw).astype(
        float
    )
    np.testing.assert_array_equal(a, c)
    assert np.abs(a - b).mean() > 1.0


def test_vertex_normals_are_radial_on_a_sphere_and_follow_the_winding():
    v, f = _sphere([0.1, -0.2, 0.3], 0.05)
    n = vertex_normals(v, f)
    radial = (v - [0.1, -0.2, 0.3]) / 0.05
    dots = (n * radial).sum(1)
    assert np.median(np.abs(dots)) > 0.99 and (np.sign(dots) == np.sign(np.median(dots))).mean() > 0.99
    np.testing.assert_allclose(vertex_normals(v, f[:, ::-1]), -n, atol=1e-6)


def test_motion_blur_smears_along_its_direction(ume_cams):
    cam = ume_cams["1201-1"]
    env = None  # flat background: the only edges are the sphere's outline, in all directions
    kw = dict(noise_sigma=0, optical_blur=0, vignetting=False)
    mesh = [_sphere([-0.06, 0.13, 0.32], 0.04)]
    sharp = render_view(cam, mesh, env, np.random.default_rng(0), **kw).astype(float)
    blur = render_view(cam, mesh, env, np.random.default_rng(0), motion_blur=(8.0, 0.0), **kw).astype(float)

    def step(img, axis):
        return np.abs(np.diff(img, axis=axis)).max()  # sharpest edge along an axis

    # an 8-px horizontal blur softens the steepest horizontal step a lot, the vertical one hardly
    assert step(blur, 1) < 0.5 * step(sharp, 1)
    assert step(blur, 0) > 0.7 * step(sharp, 0)
    # tiny blurs are ignored
    same = render_view(cam, mesh, env, np.random.default_rng(0), motion_blur=(0.3, 0.2), **kw)
    np.testing.assert_array_equal(same, sharp.astype(np.uint8))
