"""A small vectorised z-buffer rasteriser of triangle meshes into any camera model (NumPy + OpenCV).

Pipeline of :func:`render_view`:

1. Background: the pixel rays of the camera (``window_to_eye`` exact on a 16-px grid, interpolated to a
   quarter-resolution grid, cached per calibration) are rotated to world and looked up in a procedural equirectangular
   environment texture (:class:`Environment`), so the background moves with the head like a distant room.
2. Meshes: vertices are projected with the camera's own model (fisheye or pinhole); triangles with all
   vertices in front (z > ``near``) are rasterised in image space: triangles are grouped by the size
   of their pixel bounding box and each group is tested against all pixel centres of its boxes at once
   (NumPy broadcasting), barycentric coordinates interpolate the eye distance; the nearest fragment per
   pixel wins (sort by pixel, then depth).
3. Shading: two-sided Lambert + ambient from interpolated vertex normals; the light sits at the camera
   (headset illuminator) with an inverse-square fall-off for mono cameras, a fixed world light for RGB;
   per-vertex albedo gives skin variation.
4. Camera effects: optional directional motion blur, a slight optical blur, vignetting (cos⁴-like of
   the ray angle), Gaussian read noise plus shot noise (a random window of a fixed noise bank), 8-bit
   quantisation.

All lengths are metres, pixel coordinates follow spec/formats.md §3.2 (integer = pixel centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Environment", "RenderResult", "make_environment", "render_view", "rasterize", "vertex_normals"]


# --------------------------------------------------------------------------------------------------
# Background environment
# --------------------------------------------------------------------------------------------------


@dataclass
class Environment:
    """Procedural equirectangular environment texture (a distant room around the scene).

    Attributes:
        texture: ``(H, W, C)`` float32 in [0, 1]; rows = polar angle from world −y (0 … π),
            columns = azimuth about world y (−π … π); C = 1 (mono) or 3 (RGB).
        up: ``(3,)`` world unit vector taken as "up" (the texture's pole).
    """

    texture: np.ndarray
    up: np.ndarray

    def sample(self, dirs_world: np.ndarray) -> np.ndarray:
        """Texture values ``(..., C)`` float32 for unit world directions ``(..., 3)``."""
        d = np.asarray(dirs_world, dtype=np.float32)
        up = self.up.astype(np.float32)
        # Orthonormal frame (e1, up, e2) to get azimuth / polar angle.
        e1 = np.cross(up, np.array([0.0, 0.0, 1.0], np.float32))
        if np.linalg.norm(e1) < 1e-3:
            e1 = np.cross(up, np.array([1.0, 0.0, 0.0], np.float32))
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(e1, up)
        cu = np.clip(d @ up, -1.0, 1.0)
        az = np.arctan2(d @ e2, d @ e1)
        H, W = self.texture.shape[:2]
        rows = np.arccos(cu) * ((H - 1) / np.pi)
        cols = (az + np.pi) * ((W - 1) / (2 * np.pi))
        return cv2.remap(
            self.texture,
            cols.astype(np.float32),
            rows.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_WRAP,
        ).reshape(d.shape[:-1] + (self.texture.shape[2],))


def make_environment(
    rng: np.random.Generator, rgb: bool = False, size: tuple[int, int] = (256, 512), up=(0.0, -1.0, 0.0)
) -> Environment:
    """Random room-like texture: low-frequency noise octaves, a floor/ceiling gradient, rectangles.

    Args:
        rng: random generator (the texture is a deterministic function of its state).
        rgb: three channels (tinted) instead of one.
        size: texture (rows, columns).
        up: world "up" direction (the synthetic worlds use −y, the device's up at the first frame).

    Returns:
        The :class:`Environment`.
    """
    H, W = size
    C = 3 if rgb else 1
    tex = np.zeros((H, W), np.float32)
    for octave, amp in ((4, 0.35), (12, 0.18), (40, 0.08), (128, 0.04)):
        small = rng.random((max(2, octave // 2), octave)).astype(np.float32)
        tex += amp * cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)
    # floor darker / ceiling brighter (rows: 0 = up pole)
    tex += np.linspace(0.15, -0.15, H, dtype=np.float32)[:, None]
    for _ in range(int(rng.integers(10, 20))):  # furniture, windows, posters
        h = int(rng.integers(H // 20, H // 4))
        w = int(rng.integers(W // 40, W // 6))
        r0 = int(rng.integers(0, H - h))
        c0 = int(rng.integers(0, W - w))
        tex[r0 : r0 + h, c0 : c0 + w] += float(rng.uniform(-0.3, 0.3))
    # fade the azimuthal detail out towards the poles (no pinwheel at the singular rows)
    pole = np.sqrt(np.clip(np.sin(np.linspace(0.0, np.pi, H)), 0.0, 1.0)).astype(np.float32)[:, None]
    tex = tex.mean(1, keepdims=True) + pole * (tex - tex.mean(1, keepdims=True))
    tex = np.clip(tex - tex.min(), 0, None)
    tex = (0.06 + 0.4 * tex / max(float(tex.max()), 1e-6)).astype(np.float32)
    if rgb:
        tint = rng.uniform(0.7, 1.1, size=(1, 1, 3)).astype(np.float32)
        colour = cv2.resize(rng.random((4, 8, 3)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
        texc = tex[..., None] * tint * (0.75 + 0.5 * colour)
    else:
        texc = tex[..., None]
    texc = np.clip(texc, 0, 1).astype(np.float32)
    if C == 1:
        texc = texc.reshape(H, W, 1)
    up_v = np.asarray(up, dtype=np.float64)
    return Environment(texture=np.ascontiguousarray(texc), up=up_v / np.linalg.norm(up_v))


_RAY_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _camera_key(cam) -> tuple:
    return (
        cam.model_type,
        cam.width,
        cam.height,
        cam.fx,
        cam.fy,
        cam.cx,
        cam.cy,
        tuple(float(v) for v in np.asarray(cam.distortion).ravel()),
    )


def _pixel_rays(cam, step: int = 4, coarse: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Eye rays ``(h, w, 3)`` float32 at every ``step``-th pixel and the full-resolution vignetting map
    ``(H, W)`` float32 (cos⁴ of a reduced ray angle, dark beyond ~85°). Cached per calibration.

    The (smooth) ray field is unprojected exactly on a ``coarse`` grid and interpolated bilinearly; it
    only feeds the background and the vignetting, never the geometry.
    """
    key = _camera_key(cam) + (step, coarse)
    hit = _RAY_CACHE.get(key)
    if hit is not None:
        return hit
    W, H = cam.width, cam.height
    nxc, nyc = -(-(W - 1) // coarse) + 1, -(-(H - 1) // coarse) + 1
    gx, gy = np.meshgrid(np.arange(nxc) * float(coarse), np.arange(nyc) * float(coarse))
    rays_c = cam.window_to_eye(np.stack([gx, gy], -1)).astype(np.float32)
    nx, ny = -(-W // step), -(-H // step)

    def interp(a: np.ndarray, n_x: int, n_y: int, s: int) -> np.ndarray:
        # sample the coarse grid (node k at pixel k*coarse) at pixels 0, s, 2s, ...
        mx = np.broadcast_to((np.arange(n_x) * s / coarse).astype(np.float32), (n_y, n_x))
        my = np.broadcast_to((np.arange(n_y) * s / coarse).astype(np.float32)[:, None], (n_y, n_x))
        return cv2.remap(
            a,
            np.ascontiguousarray(mx),
            np.ascontiguousarray(my),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )

    rays = interp(rays_c, nx, ny, step).reshape(ny, nx, 3)
    rays /= np.maximum(np.linalg.norm(rays, axis=-1, keepdims=True), 1e-9)
    cos_t = np.clip(rays_c[..., 2], 0.0, 1.0)
    vig_c = 0.35 + 0.65 * np.cos(0.6 * np.arccos(cos_t)) ** 4
    vig_c = (vig_c * np.clip(cos_t / 0.1, 0.1, 1.0)).astype(np.float32)  # lens rim beyond ~85°
    vig = np.ascontiguousarray(interp(vig_c, W, H, 1))
    if len(_RAY_CACHE) > 64:
        _RAY_CACHE.clear()
    _RAY_CACHE[key] = (rays, vig)
    return rays, vig


def _background(cam, env: Environment | None, channels: int, step: int = 4) -> np.ndarray:
    """Background radiance ``(H, W, C)`` float32 of ``env`` seen by ``cam`` (flat grey without env)."""
    H, W = cam.height, cam.width
    if env is None:
        return np.full((H, W, channels), 0.25, np.float32)
    rays, _ = _pixel_rays(cam, step)
    R = np.asarray(cam.T_world_from_eye, dtype=np.float32)[:3, :3]
    dirs = rays @ R.T
    small = env.sample(dirs)
    if small.shape[-1] != channels:
        small = np.repeat(small.mean(-1, keepdims=True), channels, -1)
    h, w = small.shape[:2]
    mx = np.broadcast_to((np.arange(W) / step).astype(np.float32), (H, W))
    my = np.broadcast_to((np.arange(H) / step).astype(np.float32)[:, None], (H, W))
    big = cv2.remap(
        small,
        np.ascontiguousarray(mx),
        np.ascontiguousarray(my),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return big.reshape(H, W, channels)


_NOISE_BANK: np.ndarray | None = None


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` standard-normal float32 values: a random window of a fixed, process-wide bank (fast and a
    deterministic function of ``rng``)."""
    global _NOISE_BANK
    if _NOISE_BANK is None or _NOISE_BANK.size < 2 * n:
        _NOISE_BANK = np.random.default_rng(12345).standard_normal(max(2 * n, 1 << 22), dtype=np.float32)
    off = int(rng.integers(0, _NOISE_BANK.size - n))
    out = _NOISE_BANK[off : off + n]
    return -out if rng.random() < 0.5 else out


# --------------------------------------------------------------------------------------------------
# Rasteriser
# --------------------------------------------------------------------------------------------------


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(V, 3)`` float32 of a triangle mesh (winding sets the sign)."""
    v = np.asarray(vertices, dtype=np.float32)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        for c in range(3):
            n[:, c] += np.bincount(f[:, k], weights=fn[:, c], minlength=len(v)).astype(np.float32)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


@dataclass
class Fragments:
    """Winning fragments (one per covered pixel).

    Attributes:
        pix: ``(K,)`` int64 flat pixel index ``y * W + x``.
        tri: ``(K,)`` int64 triangle index into the concatenated face list.
        bary: ``(K, 3)`` float32 barycentric weights (image-space).
        depth: ``(K,)`` float32 interpolated eye distance, metres.
    """

    pix: np.ndarray
    tri: np.ndarray
    bary: np.ndarray
    depth: np.ndarray


_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def rasterize(
    win: np.ndarray,
    depth: np.ndarray,
    faces: np.ndarray,
    width: int,
    height: int,
    valid: np.ndarray | None = None,
) -> Fragments:
    """Z-buffer rasterisation of projected triangles (pixel centres at integer coordinates).

    Args:
        win: ``(V, 2)`` vertex window coordinates, pixels.
        depth: ``(V,)`` vertex depth (eye distance), metres; smaller wins.
        faces: ``(F, 3)`` int vertex indices.
        width, height: image size.
        valid: ``(V,)`` bool vertices usable (e.g. in front of the camera); triangles touching an
            invalid vertex are dropped.

    Returns:
        The nearest :class:`Fragments`, one per covered pixel, sorted by pixel index.
    """
    win = np.asarray(win, dtype=np.float32)
    depth = np.asarray(depth, dtype=np.float32)
    f = np.asarray(faces, dtype=np.int64)
    tri_ok = np.ones(len(f), bool) if valid is None else valid[f].all(1)
    p0, p1, p2 = win[f[:, 0]], win[f[:, 1]], win[f[:, 2]]
    xmin = np.ceil(np.minimum(np.minimum(p0[:, 0], p1[:, 0]), p2[:, 0]))
    xmax = np.floor(np.maximum(np.maximum(p0[:, 0], p1[:, 0]), p2[:, 0]))
    ymin = np.ceil(np.minimum(np.minimum(p0[:, 1], p1[:, 1]), p2[:, 1]))
    ymax = np.floor(np.maximum(np.maximum(p0[:, 1], p1[:, 1]), p2[:, 1]))
    finite = np.isfinite(xmin) & np.isfinite(xmax) & np.isfinite(ymin) & np.isfinite(ymax)
    xmin = np.clip(np.where(finite, xmin, 0), 0, width - 1).astype(np.int64)
    xmax = np.clip(np.where(finite, xmax, -1), -1, width - 1).astype(np.int64)
    ymin = np.clip(np.where(finite, ymin, 0), 0, height - 1).astype(np.int64)
    ymax = np.clip(np.where(finite, ymax, -1), -1, height - 1).astype(np.int64)
    bw = xmax - xmin + 1
    bh = ymax - ymin + 1
    # Edge-function denominators (twice the signed area); degenerate triangles are dropped.
    area = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p2[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1])
    keep = tri_ok & finite & (bw > 0) & (bh > 0) & (np.abs(area) > 1e-9)
    # Very large triangles (near-plane artefacts, > 128 px) are dropped as well.
    size = np.maximum(bw, bh)
    keep &= size <= _BUCKETS[-1]
    idx_all = np.nonzero(keep)[0]
    out_pix, out_tri, out_b, out_d = [], [], [], []
    size_k = size[idx_all]
    lo = 0
    for K in _BUCKETS:
        sel = idx_all[(size_k > lo) & (size_k <= K)]
        lo = K
        if sel.size == 0:
            continue
        oy, ox = np.divmod(np.arange(K * K), K)
        px = xmin[sel, None] + ox[None]  # (n, K*K)
        py = ymin[sel, None] + oy[None]
        inb = (px <= xmax[sel, None]) & (py <= ymax[sel, None])
        a0, a1, a2 = p0[sel], p1[sel], p2[sel]
        inv = (1.0 / area[sel])[:, None]
        fx = px.astype(np.float32)
        fy = py.astype(np.float32)
        # barycentric weight of vertex 0 = edge (1 -> 2), vertex 1 = edge (2 -> 0)
        w0 = (
            (a2[:, 0:1] - a1[:, 0:1]) * (fy - a1[:, 1:2]) - (a2[:, 1:2] - a1[:, 1:2]) * (fx - a1[:, 0:1])
        ) * inv
        w1 = (
            (a0[:, 0:1] - a2[:, 0:1]) * (fy - a2[:, 1:2]) - (a0[:, 1:2] - a2[:, 1:2]) * (fx - a2[:, 0:1])
        ) * inv
        w2 = 1.0 - w0 - w1
        eps = -1e-5
        m = inb & (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
        r, c = np.nonzero(m)
        if r.size == 0:
            continue
        t = sel[r]
        b = np.stack([w0[r, c], w1[r, c], w2[r, c]], -1)
        d = b[:, 0] * depth[f[t, 0]] + b[:, 1] * depth[f[t, 1]] + b[:, 2] * depth[f[t, 2]]
        out_pix.append(py[r, c] * width + px[r, c])
        out_tri.append(t)
        out_b.append(b)
        out_d.append(d)
    if not out_pix:
        z = np.zeros(0, np.int64)
        return Fragments(z, z, np.zeros((0, 3), np.float32), np.zeros(0, np.float32))
    pix = np.concatenate(out_pix)
    tri = np.concatenate(out_tri)
    bary = np.concatenate(out_b).astype(np.float32)
    dep = np.concatenate(out_d).astype(np.float32)
    order = np.lexsort((dep, pix))
    ps = pix[order]
    first = np.ones(len(ps), bool)
    first[1:] = ps[1:] != ps[:-1]
    win_idx = order[first]
    return Fragments(pix[win_idx], tri[win_idx], bary[win_idx], dep[win_idx])


# --------------------------------------------------------------------------------------------------
# Full view
# --------------------------------------------------------------------------------------------------


@dataclass
class RenderResult:
    """Output of :func:`render_view`.

    Attributes:
        image: ``(H, W)`` (mono) or ``(H, W, 3)`` (RGB) uint8.
        mesh_id: ``(H, W)`` int16 index of the visible mesh per pixel, −1 = background.
        depth: ``(H, W)`` float32 eye distance of the visible surface, metres (inf = background).
    """

    image: np.ndarray
    mesh_id: np.ndarray
    depth: np.ndarray


SKIN_RGB = np.array([0.86, 0.64, 0.52], np.float32)


def render_view(
    cam,
    meshes: list[tuple[np.ndarray, np.ndarray]],
    background: Environment | None,
    rng: np.random.Generator,
    *,
    albedo: list[np.ndarray | None] | None = None,
    rgb: bool | None = None,
    ambient: float = 0.25,
    light_power: float = 0.75,
    noise_sigma: float = 2.5,
    vignetting: bool = True,
    optical_blur: float = 0.6,
    motion_blur: tuple[float, float] | None = None,
    near: float = 0.03,
    return_buffers: bool = False,
) -> np.ndarray | RenderResult:
    """Render triangle meshes over a procedural background into ``cam``.

    Args:
        cam: :class:`mvhand.geometry.cameras.CameraModel` (any projection model; pose = ``T_world_from_eye``).
        meshes: list of ``(vertices (V, 3) world metres, faces (F, 3) int)``.
        background: environment seen behind the meshes (``None``: flat grey).
        rng: random generator for the sensor noise (the only randomness).
        albedo: per mesh ``None`` (uniform skin), ``(V,)`` brightness factors or ``(V, 3)`` RGB albedo.
        rgb: output 3 channels; default ``cam.is_rgb``.
        ambient, light_power: shading weights (radiance in [0, 1] before noise).
        noise_sigma: read-noise standard deviation in grey levels (plus shot noise ∝ √signal).
        vignetting: darken towards the image border (cos⁴-like of the ray angle).
        optical_blur: Gaussian blur sigma in pixels (0 = none; softens aliasing like a real lens).
        motion_blur: ``(dx, dy)`` pixels of a linear motion-blur kernel, or ``None``.
        near: minimum eye z (m) for a vertex to be rasterised.
        return_buffers: return a :class:`RenderResult` with the mesh-id and depth buffers.

    Returns:
        ``(H, W)`` or ``(H, W, 3)`` uint8 image, or a :class:`RenderResult`.
    """
    H, W = cam.height, cam.width
    is_rgb = cam.is_rgb if rgb is None else rgb
    C = 3 if is_rgb else 1
    img = _background(cam, background, C).reshape(H * W, C)
    mesh_id = np.full(H * W, -1, np.int16)
    depth_buf = np.full(H * W, np.inf, np.float32)
    if meshes:
        verts_list, faces_list, mid_list, alb_list, off = [], [], [], [], 0
        for i, (v, f) in enumerate(meshes):
            v = np.asarray(v, dtype=np.float32).reshape(-1, 3)
            f = np.asarray(f, dtype=np.int64).reshape(-1, 3)
            verts_list.append(v)
            faces_list.append(f + off)
            mid_list.append(np.full(len(v), i, np.int16))
            a = None if albedo is None or i >= len(albedo) else albedo[i]
            if a is None:
                a = np.ones(len(v), np.float32)
            a = np.asarray(a, np.float32)
            if a.ndim == 1:
                a = a[:, None] * (SKIN_RGB[None] if is_rgb else np.full((1, 1), 0.85, np.float32))
            elif not is_rgb:
                a = a.mean(1, keepdims=True)
            alb_list.append(a)
            off += len(v)
        V = np.concatenate(verts_list)
        F = np.concatenate(faces_list)
        vmesh = np.concatenate(mid_list)
        A = np.concatenate(alb_list)
        N = np.concatenate(
            [
                vertex_normals(v, np.asarray(f, np.int64).reshape(-1, 3))
                for v, (_, f) in zip(verts_list, meshes)
            ]
        )
        v_eye = cam.world_to_eye(V.astype(np.float64)).astype(np.float32)
        dist = np.linalg.norm(v_eye, axis=1)
        valid = v_eye[:, 2] > near
        win = cam.eye_to_window(v_eye.astype(np.float64)).astype(np.float32)
        fr = rasterize(win, dist, F, W, H, valid)
        if fr.pix.size:
            tv = F[fr.tri]  # (K, 3)
            b = fr.bary[..., None]
            R = np.asarray(cam.T_world_from_eye, np.float32)[:3, :3]
            n_eye = N @ R  # world normals -> eye frame
            n = (b * n_eye[tv]).sum(1)
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
            p = (b * v_eye[tv]).sum(1)
            d = np.linalg.norm(p, axis=1, keepdims=True)
            to_cam = -p / np.maximum(d, 1e-9)
            if is_rgb:
                light = np.array([0.3, -0.8, -0.5], np.float32) @ R  # world light direction -> eye
                light /= np.linalg.norm(light)
                lam = 0.6 * np.abs(n @ light)[:, None] + 0.4 * np.abs((n * to_cam).sum(1, keepdims=True))
                fall = 1.0
            else:
                lam = np.abs((n * to_cam).sum(1, keepdims=True))  # illuminator at the camera
                fall = np.clip((0.35 / d) ** 2, 0.3, 2.0)
            alb = (b * A[tv]).sum(1)
            rad = alb * (ambient + light_power * lam * fall)
            img[fr.pix] = rad
            mesh_id[fr.pix] = vmesh[tv[:, 0]]
            depth_buf[fr.pix] = fr.depth
    img = img.reshape(H, W, C)
    if motion_blur is not None and np.hypot(*motion_blur) >= 1.0:
        L = int(np.ceil(np.hypot(*motion_blur))) | 1
        k = np.zeros((L, L), np.float32)
        c = L // 2
        cv2.line(
            k,
            (int(round(c - motion_blur[0] / 2)), int(round(c - motion_blur[1] / 2))),
            (int(round(c + motion_blur[0] / 2)), int(round(c + motion_blur[1] / 2))),
            1.0,
            1,
        )
        k /= k.sum()
        img = cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT).reshape(H, W, C)
    if optical_blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), optical_blur).reshape(H, W, C)
    if vignetting:
        _, vig = _pixel_rays(cam)
        img = img * vig[..., None]
    out = np.ascontiguousarray(img, dtype=np.float32) * np.float32(255.0)
    if noise_sigma > 0:
        sigma = cv2.sqrt(np.maximum(out, 0).reshape(H, W * C)).reshape(out.shape) * np.float32(0.08)
        sigma += np.float32(noise_sigma)
        out += _noise(rng, out.size).reshape(out.shape) * sigma
    out = np.clip(out + np.float32(0.5), 0, 255).astype(np.uint8)
    if C == 1:
        out = out[..., 0]
    if return_buffers:
        return RenderResult(out, mesh_id.reshape(H, W), depth_buf.reshape(H, W))
    return out
