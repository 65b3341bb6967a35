"""Camera models of the challenge (spec/formats.md §2.2, §3): parsing, projection, unprojection, crops, warp.

* :class:`CameraModel` holds one ``cameras.json`` value; :func:`camera_from_json` /
  :func:`camera_to_json` convert it (round trip keeps the JSON values, unused calibration keys are
  kept verbatim).
* NumPy maths is batched over any leading dimensions and keeps the input float dtype (float32 in,
  float32 out), so large vertex batches can be projected in float32.
* :func:`project_pinhole` / :func:`project_pinhole_torch`: the pinhole projection of world points into
  crop cameras from raw pose and intrinsics (NumPy / differentiable, batched Torch).
* :func:`crop_camera` (spec/formats.md §3.8), :func:`crop_camera_from_points` (spec/formats.md §3.11),
  :func:`count_visible`.
* :func:`warp_image` (spec/formats.md §3.9) is a fast equivalent of the toolkit's ``warp_image``
  (:func:`warp_image_reference`): when the crop camera shares the source's optical centre, the exact
  source map is evaluated on a coarse grid and upsampled with separable cubic Lagrange interpolation;
  pixels close to the behind-camera boundary are computed exactly, and the behind-camera mask is exact.

Pixel convention: integer window coordinates are pixel centres (spec/formats.md §3.2).
Eye frame: +x right, +y down, +z forward. Units: metres, radians, pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from mvhand.geometry.transforms import se3_from_json, se3_to_json
from mvhand.io_utils import InputError

if TYPE_CHECKING:  # torch is not imported here (project_pinhole_torch gets tensors; the import costs ~2 s)
    import torch

__all__ = [
    "MODEL_REGISTRY",
    "CameraModel",
    "camera_from_json",
    "camera_to_json",
    "cameras_from_json",
    "MIN_DEPTH",
    "project_pinhole",
    "project_pinhole_torch",
    "crop_camera",
    "crop_camera_from_points",
    "count_visible",
    "warp_image",
    "warp_image_reference",
    "warp_maps",
    "warp_maps_reference",
]

# projection_model_type -> (projection, distortion kind, number of distortion coefficients)
MODEL_REGISTRY: dict[str, tuple[str, str, int]] = {
    "PinholePlane": ("perspective", "none", 0),
    "OpenCV": ("perspective", "opencv", 5),
    "Rational": ("perspective", "rational", 8),
    "OculusVisionFishEye": ("arctan", "ovr44", 8),
    "OculusVisionFishEye62": ("arctan", "ovr62", 8),
    "OculusVisionFishEye624": ("arctan", "ovr624", 12),
    "CameraModelType.FISHEYE624": ("arctan", "ovr624", 12),
}
_FISHEYE624 = "CameraModelType.FISHEYE624"
_EPS_R = 2.0**-128  # arctan projection guard (spec/formats.md §3.4)
_ORTHO_TOL = 1e-5  # extrinsic validation max|RᵀR − I| (spec/formats.md §2.1)


def _model_info(model_type: str) -> tuple[str, str, int]:
    try:
        return MODEL_REGISTRY[model_type]
    except KeyError:
        raise ValueError(
            f"unknown projection_model_type {model_type!r}; accepted: {sorted(MODEL_REGISTRY)}"
        ) from None


def _split_params(model_type: str, n_params: int) -> tuple[bool, int]:
    """(single_focal, number of leading intrinsics) of a projection_params list; raises on bad counts."""
    _, _, n_dist = _model_info(model_type)
    if model_type == _FISHEYE624 and n_params == 3 + n_dist:
        return True, 3
    if n_params != 4 + n_dist:
        extra = " (or 15 with a single focal length)" if model_type == _FISHEYE624 else ""
        raise ValueError(
            f"projection_model_type {model_type!r} needs {4 + n_dist} projection_params{extra}, got {n_params}"
        )
    return False, 4


def _canonical_coeffs(kind: str, d: Any) -> tuple:
    """Distortion coefficients in the order used by the maths kernels.

    Returns, per kind: ``opencv``/``rational``: (k1..k6, p1, p2) (k4..k6 = 0 for opencv);
    ``ovr44``: (k1..k4, p1..p4); ``ovr62``/``ovr624``: (k1..k6, p1, p2, s1..s4).
    ``d`` is indexable (list or 1-D array).
    """
    if kind == "none":
        return ()
    if kind == "opencv":  # k1, k2, k3, p1, p2
        z = 0.0
        return (d[0], d[1], d[2], z, z, z, d[3], d[4])
    if kind == "rational":  # k1, k2, k3, p1, p2, k4, k5, k6
        return (d[0], d[1], d[2], d[5], d[6], d[7], d[3], d[4])
    if kind == "ovr44":  # k1..k4, p1..p4
        return tuple(d[i] for i in range(8))
    if kind == "ovr62":  # k1, k2, k3, k4, p1, p2, k5, k6
        z = 0.0
        return (d[0], d[1], d[2], d[3], d[6], d[7], d[4], d[5], z, z, z, z)
    if kind == "ovr624":  # k1..k6, p1, p2, s1..s4
        return tuple(d[i] for i in range(12))
    raise AssertionError(kind)


# --------------------------------------------------------------------------------------------------
# Maths kernels (NumPy)
# --------------------------------------------------------------------------------------------------


def _poly(r2, ks):
    """1 + k1 r2 + k2 r2² + ... (Horner); trailing zero Python-number coefficients are skipped."""
    ks = list(ks)
    while ks and isinstance(ks[-1], float | int) and ks[-1] == 0:
        ks.pop()
    acc = None
    for k in reversed(ks):
        acc = k if acc is None else acc * r2 + k
    return 1.0 + acc * r2 if acc is not None else 1.0


def _distort(px, py, kind: str, c: tuple):
    """Distortion of spec/formats.md §3.5 applied to projected coordinates ``(px, py)``; returns ``(qx, qy)``."""
    if kind == "none":
        return px, py
    if kind in ("opencv", "rational"):
        k1, k2, k3, k4, k5, k6, p1, p2 = c
        r2 = px * px + py * py
        radial = _poly(r2, (k1, k2, k3))
        if kind == "rational":
            radial = radial / _poly(r2, (k4, k5, k6))
        xy2 = 2.0 * px * py
        qx = px * radial + p1 * xy2 + p2 * (r2 + 2.0 * px * px)
        qy = py * radial + p2 * xy2 + p1 * (r2 + 2.0 * py * py)
        return qx, qy
    if kind == "ovr44":
        k1, k2, k3, k4, p1, p2, p3, p4 = c
        r2 = px * px + py * py
        radial = _poly(r2, (k1, k2, k3, k4))
        ux, uy = px * radial, py * radial
        s2 = ux * ux + uy * uy
        tau = 1.0 + p3 * s2 + p4 * s2 * s2
        xy2 = 2.0 * ux * uy
        qx = ux + (p1 * xy2 + p2 * (s2 + 2.0 * ux * ux)) * tau
        qy = uy + (p2 * xy2 + p1 * (s2 + 2.0 * uy * uy)) * tau
        return qx, qy
    # ovr62 / ovr624 (canonical order k1..k6, p1, p2, s1..s4)
    k1, k2, k3, k4, k5, k6, p1, p2, s1, s2c, s3, s4 = c
    r2 = px * px + py * py
    r2 = np.minimum(r2, math.pi**2)
    radial = _poly(r2, (k1, k2, k3, k4, k5, k6))
    ux, uy = px * radial, py * radial
    s2 = ux * ux + uy * uy
    xy2 = 2.0 * ux * uy
    qx = ux + p2 * xy2 + p1 * (s2 + 2.0 * ux * ux)
    qy = uy + p1 * xy2 + p2 * (s2 + 2.0 * uy * uy)
    if not _all_zero((s1, s2c, s3, s4)):
        s4_ = s2 * s2
        qx = qx + s1 * s2 + s2c * s4_
        qy = qy + s3 * s2 + s4 * s4_
    return qx, qy


def _all_zero(vals) -> bool:
    return all(isinstance(v, float | int) and v == 0 for v in vals)


def _project_xyz(x, y, z, projection: str):
    """Projection of spec/formats.md §3.4: ``(px, py)``."""
    if projection == "perspective":
        return x / z, y / z
    r = np.sqrt(x * x + y * y)
    theta = np.arctan2(r, z)
    scale = theta / np.maximum(r, _EPS_R)
    return x * scale, y * scale


def _eye_to_window_np(v, projection, kind, coeffs, fx, fy, cx, cy) -> np.ndarray:
    v = np.asarray(v)
    if v.dtype != np.float32:
        v = v.astype(np.float64, copy=False)
    if v.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3), got {v.shape}")
    if v.ndim == 1:
        return _eye_to_window_np(v[None], projection, kind, coeffs, fx, fy, cx, cy)[0]
    if projection == "arctan" and kind in ("ovr62", "ovr624"):  # the fisheyes: fused float64 fast path
        rows = np.ascontiguousarray(v.reshape(-1, 3).T, dtype=np.float64)
        w = _fisheye_rows(rows, fx, fy, cx, cy, coeffs)
        return w.T.reshape(v.shape[:-1] + (2,)).astype(v.dtype, copy=False)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    px, py = _project_xyz(x, y, z, projection)
    qx, qy = _distort(px, py, kind, coeffs)
    out = np.empty(v.shape[:-1] + (2,), dtype=v.dtype)
    np.multiply(qx, fx, out=out[..., 0])
    out[..., 0] += cx
    np.multiply(qy, fy, out=out[..., 1])
    out[..., 1] += cy
    return out


# --------------------------------------------------------------------------------------------------
# Unprojection (window → eye), NumPy float64
# --------------------------------------------------------------------------------------------------


def _newton_2d(func, target: np.ndarray, x0: np.ndarray, jac=None, tol: float = 1e-7, max_iter: int = 50):
    """Solve ``func(x) = target`` for ``x (..., 2)`` by vectorised Newton (finite-difference Jacobian
    unless ``jac`` is given); stops when every step norm < ``tol`` or after ``max_iter`` iterations."""
    x = x0.copy()
    h = 1e-6
    for _ in range(max_iter):
        f = func(x)
        res = target - f
        if jac is None:
            fx1 = func(x + np.array([h, 0.0]))
            fx0 = func(x - np.array([h, 0.0]))
            fy1 = func(x + np.array([0.0, h]))
            fy0 = func(x - np.array([0.0, h]))
            j00, j10 = ((fx1 - fx0) / (2 * h))[..., 0], ((fx1 - fx0) / (2 * h))[..., 1]
            j01, j11 = ((fy1 - fy0) / (2 * h))[..., 0], ((fy1 - fy0) / (2 * h))[..., 1]
        else:
            j00, j01, j10, j11 = jac(x)
        det = j00 * j11 - j01 * j10
        det = np.where(np.abs(det) < 1e-300, 1e-300, det)
        dx = (j11 * res[..., 0] - j01 * res[..., 1]) / det
        dy = (-j10 * res[..., 0] + j00 * res[..., 1]) / det
        x[..., 0] += dx
        x[..., 1] += dy
        if not np.any(dx * dx + dy * dy >= tol * tol):
            break
    return x


def _newton_radial(rd: np.ndarray, ks: tuple, tol: float = 1e-7, max_iter: int = 50) -> np.ndarray:
    """Solve ``θ (1 + k1 θ² + k2 θ⁴ + ...) = rd`` for θ (start θ = rd; reset |θ| ≥ π/2 to 0.999·π/2)."""
    th = rd.copy()
    for _ in range(max_iter):
        t2 = th * th
        f = th * _poly(t2, ks) - rd
        deriv = 1.0
        t2i = 1.0
        for i, k in enumerate(ks, start=1):
            t2i = t2i * t2
            deriv = deriv + (2 * i + 1) * k * t2i
        step = f / np.where(np.abs(deriv) < 1e-300, 1e-300, deriv)
        th = th - step
        th = np.where(np.abs(th) >= math.pi / 2, 0.999 * math.pi / 2, th)
        if not np.any(np.abs(step) >= tol):
            break
    return th


def _undistort(q: np.ndarray, projection: str, kind: str, c: tuple) -> np.ndarray:
    """Inverse of the distortion (spec/formats.md §3.5, §3.7, Newton): ``q (..., 2)`` → projected ``p (..., 2)``."""
    if kind == "none":
        return q
    if projection == "perspective":

        def f(p):
            return np.stack(_distort(p[..., 0], p[..., 1], kind, c), -1)

        return _newton_2d(f, q, q)
    if kind == "ovr44":
        k1, k2, k3, k4, p1, p2, p3, p4 = c

        def ftan(u):
            ux, uy = u[..., 0], u[..., 1]
            s2 = ux * ux + uy * uy
            tau = 1.0 + p3 * s2 + p4 * s2 * s2
            xy2 = 2.0 * ux * uy
            return np.stack(
                [
                    ux + (p1 * xy2 + p2 * (s2 + 2 * ux * ux)) * tau,
                    uy + (p2 * xy2 + p1 * (s2 + 2 * uy * uy)) * tau,
                ],
                -1,
            )

        u = _newton_2d(ftan, q, q)
        ks = (k1, k2, k3, k4)
    else:
        k1, k2, k3, k4, k5, k6, p1, p2, s1, s2c, s3, s4 = c

        def ftp(u):
            ux, uy = u[..., 0], u[..., 1]
            s2 = ux * ux + uy * uy
            xy2 = 2.0 * ux * uy
            qx = ux + p2 * xy2 + p1 * (s2 + 2 * ux * ux) + s1 * s2 + s2c * s2 * s2
            qy = uy + p1 * xy2 + p2 * (s2 + 2 * uy * uy) + s3 * s2 + s4 * s2 * s2
            return np.stack([qx, qy], -1)

        def jtp(u):
            ux, uy = u[..., 0], u[..., 1]
            s2 = ux * ux + uy * uy
            a = 2.0 * (s1 + 2.0 * s2c * s2)
            b = 2.0 * (s3 + 2.0 * s4 * s2)
            return (
                1 + 6 * p1 * ux + 2 * p2 * uy + a * ux,
                2 * p2 * ux + 2 * p1 * uy + a * uy,
                2 * p2 * ux + 2 * p1 * uy + b * ux,
                1 + 2 * p1 * ux + 6 * p2 * uy + b * uy,
            )

        u = _newton_2d(ftp, q, q, jac=jtp)
        ks = (k1, k2, k3, k4, k5, k6)
    rd = np.sqrt(u[..., 0] ** 2 + u[..., 1] ** 2)
    th = _newton_radial(rd, ks)
    scale = th / np.where(rd > 0, rd, 1.0)
    return u * scale[..., None]


# --------------------------------------------------------------------------------------------------
# Camera model
# --------------------------------------------------------------------------------------------------


def _validate_extrinsics(T: np.ndarray, who: str = "camera") -> np.ndarray:
    T = np.asarray(T, dtype=np.float32)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"{who}: T_world_from_eye must be a finite (4, 4) matrix, got shape {T.shape}")
    R = T[:3, :3].astype(np.float64)
    err = np.abs(R.T @ R - np.eye(3)).max()
    if not err < _ORTHO_TOL:
        raise ValueError(
            f"{who}: T_world_from_eye rotation is not orthonormal (max|RᵀR − I| = {err:.3g} ≥ 1e-5)"
        )
    return T


@dataclass(eq=False)
class CameraModel:
    """One calibrated camera (a ``cameras.json`` value, or a crop camera).

    Attributes:
        model_type: ``projection_model_type`` (spec/formats.md §3.3), e.g. ``"OculusVisionFishEye62"``,
            ``"PinholePlane"``.
        width, height: image size, pixels.
        fx, fy, cx, cy: intrinsics, pixels (spec/formats.md §3.2 pixel-centre convention).
        distortion: ``(P,)`` float64 coefficients after fx, fy, cx, cy in the model's JSON order.
        T_world_from_eye: ``(4, 4)`` float32 pose of the eye frame in world, metres.
        label, serial_number, stream_id: calibration strings (``label`` detects RGB).
        single_focal: 15-parameter ``CameraModelType.FISHEYE624`` (``[f, cx, cy, ...]``).
        extra: other calibration keys kept verbatim (``T_device_from_camera``, ``max_solid_angle``...).
    """

    model_type: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(0))
    T_world_from_eye: np.ndarray = field(default_factory=lambda: np.eye(4, dtype=np.float32))
    label: str = ""
    serial_number: str = ""
    stream_id: str = ""
    single_focal: bool = False
    extra: dict = field(default_factory=dict)
    # Original SE3 JSON of T_world_from_camera, written back verbatim while the matrix is unchanged.
    _T_json: dict | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        projection, kind, n_dist = _model_info(self.model_type)
        self.distortion = np.asarray(self.distortion, dtype=np.float64).reshape(-1)
        if self.distortion.size != n_dist:
            raise ValueError(
                f"{self.model_type!r} needs {n_dist} distortion coefficients, got {self.distortion.size}"
            )
        if self.single_focal and (self.model_type != _FISHEYE624 or self.fx != self.fy):
            raise ValueError("single_focal is only valid for CameraModelType.FISHEYE624 with fx == fy")
        self.T_world_from_eye = _validate_extrinsics(self.T_world_from_eye, self.label or self.model_type)
        self.width, self.height = int(self.width), int(self.height)
        self.fx, self.fy, self.cx, self.cy = float(self.fx), float(self.fy), float(self.cx), float(self.cy)
        self._projection = projection
        self._kind = kind
        self._coeffs = _canonical_coeffs(kind, [float(v) for v in self.distortion])

    # ---- properties ----
    @property
    def is_rgb(self) -> bool:
        """True if the calibration label names an RGB camera (``"rgb"`` substring)."""
        return "rgb" in self.label

    @property
    def is_pinhole(self) -> bool:
        """True for ``PinholePlane`` (no distortion)."""
        return self._kind == "none"

    @property
    def projection_params(self) -> list[float]:
        """The JSON ``projection_params`` list (15 values for a single-focal FISHEYE624)."""
        head = [self.fx, self.cx, self.cy] if self.single_focal else [self.fx, self.fy, self.cx, self.cy]
        return head + [float(v) for v in self.distortion]

    @property
    def K(self) -> np.ndarray:
        """``(4,)`` float64 ``[fx, fy, cx, cy]``."""
        return np.array([self.fx, self.fy, self.cx, self.cy])

    # ---- extrinsics ----
    def world_to_eye(self, p: np.ndarray) -> np.ndarray:
        """World points ``(..., 3)`` → eye frame ``(..., 3)``: ``Rᵀ (p − t)`` (keeps float32)."""
        p = np.asarray(p)
        dt = np.float32 if p.dtype == np.float32 else np.float64
        R = self.T_world_from_eye[:3, :3].astype(dt)
        t = self.T_world_from_eye[:3, 3].astype(dt)
        return (p.astype(dt, copy=False) - t) @ R

    def eye_to_world(self, v: np.ndarray) -> np.ndarray:
        """Eye points ``(..., 3)`` → world ``(..., 3)``: ``R v + t`` (keeps float32)."""
        v = np.asarray(v)
        dt = np.float32 if v.dtype == np.float32 else np.float64
        R = self.T_world_from_eye[:3, :3].astype(dt)
        t = self.T_world_from_eye[:3, 3].astype(dt)
        return v.astype(dt, copy=False) @ R.T + t

    # ---- projection ----
    def eye_to_window(self, v: np.ndarray) -> np.ndarray:
        """Eye points ``(..., 3)`` (metres) → window ``(..., 2)`` pixels (spec/formats.md §3.4–3.6, no z guard)."""
        return _eye_to_window_np(
            v, self._projection, self._kind, self._coeffs, self.fx, self.fy, self.cx, self.cy
        )

    def world_to_window(self, p: np.ndarray) -> np.ndarray:
        """World points ``(..., 3)`` → window ``(..., 2)`` pixels."""
        return self.eye_to_window(self.world_to_eye(p))

    def window_to_eye(self, w: np.ndarray) -> np.ndarray:
        """Window points ``(..., 2)`` → unit eye rays ``(..., 3)`` (float64; spec/formats.md §3.7).

        Pinhole is exact. Distorted models use Newton iterations (an addition beyond the toolkit):
        fisheye models return ``(sin θ · u/|u|, cos θ)`` with θ < π/2.
        """
        w = np.asarray(w, dtype=np.float64)
        q = np.stack([(w[..., 0] - self.cx) / self.fx, (w[..., 1] - self.cy) / self.fy], -1)
        p = _undistort(q, self._projection, self._kind, self._coeffs)
        if self._projection == "perspective":
            v = np.concatenate([p, np.ones(p.shape[:-1] + (1,))], -1)
            n = np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 5.43e-20)
            return v / n
        th = np.sqrt(p[..., 0] ** 2 + p[..., 1] ** 2)
        s = np.where(th > 0, np.sin(th) / np.where(th > 0, th, 1.0), 1.0)
        return np.stack([p[..., 0] * s, p[..., 1] * s, np.cos(th)], -1)

    def in_window(self, w: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Toolkit's inside test (spec/formats.md §3.2): ``−½−m < x < W−½+m`` and ``−½−m ≤ y < H−½+m``."""
        w = np.asarray(w)
        x, y = w[..., 0], w[..., 1]
        return (
            (x > -0.5 - margin)
            & (x < self.width - 0.5 + margin)
            & (y >= -0.5 - margin)
            & (y < self.height - 0.5 + margin)
        )


# --------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------

_CALIB_KNOWN = (
    "label",
    "serial_number",
    "image_width",
    "image_height",
    "projection_model_type",
    "projection_params",
)


#: Largest image side accepted from ``cameras.json`` (px).
MAX_IMAGE_SIDE = 65536
#: Plausible focal lengths, as a multiple of the image's larger side: a real lens (fisheye or pinhole) lies far
#: inside this range; 0, negative, 1e308 or a few pixels give blank crops.
FOCAL_RANGE = (0.05, 100.0)


def _image_side(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise ValueError(f"{key} must be an integer number of pixels, got {str(value)[:40]}")
    if not 1 <= value <= MAX_IMAGE_SIDE:
        raise ValueError(f"{key} {str(value)[:40]} is not a plausible image size (1 to {MAX_IMAGE_SIDE} px)")
    return int(value)


def _check_intrinsics(fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> None:
    """Focal lengths and principal point a real camera of this image size can have (ValueError otherwise)."""
    side = max(width, height)
    lo, hi = FOCAL_RANGE[0] * side, FOCAL_RANGE[1] * side
    for name, f in (("fx", fx), ("fy", fy)):
        if not lo <= f <= hi:
            raise ValueError(
                f"focal length {name} = {f:g} px is not plausible for a {width}x{height} image "
                f"(expected {lo:g} to {hi:g} px)"
            )
    if not (-width <= cx <= 2 * width and -height <= cy <= 2 * height):
        raise ValueError(f"principal point ({cx:g}, {cy:g}) px is far outside the {width}x{height} image")


def camera_from_json(entry: dict, source: str | None = None) -> CameraModel:
    """Camera of one ``cameras.json`` value (spec/formats.md §2.2).

    Args:
        entry: ``{"T_world_from_camera": SE3, "calibration": {...}}``.
        source: file / stream name used in error messages.

    Raises:
        InputError: missing keys, unknown model, wrong parameter count, an image size that is not an integer
            in 1…65536 px, implausible intrinsics (focal length outside 0.05–100× the larger image side,
            principal point far outside the image), non-orthonormal rotation.
    """
    fix = "fix the cameras.json entry (spec/formats.md §2.2, §3.3)"
    try:
        T_json = entry["T_world_from_camera"]
        calib = entry["calibration"]
        missing = [k for k in _CALIB_KNOWN if k not in calib]
        if missing:
            raise InputError(source, f"calibration lacks {missing}", fix)
        model_type = str(calib["projection_model_type"])
        params = [float(v) for v in calib["projection_params"]]
        single, n0 = _split_params(model_type, len(params))
        if not all(math.isfinite(v) for v in params):
            raise ValueError(f"non-finite projection_params {params}")
        fx, fy, cx, cy = (params[0], params[0], params[1], params[2]) if single else params[:4]
        width = _image_side(calib["image_width"], "image_width")
        height = _image_side(calib["image_height"], "image_height")
        _check_intrinsics(fx, fy, cx, cy, width, height)
        extra = {k: v for k, v in calib.items() if k not in _CALIB_KNOWN and k != "stream_id"}
        return CameraModel(
            model_type=model_type,
            width=width,
            height=height,
            fx=fx,
            fy=fy,
            cx=cx,
            cy=cy,
            distortion=np.asarray(params[n0:], dtype=np.float64),
            T_world_from_eye=se3_from_json(T_json),
            label=str(calib["label"]),
            serial_number=str(calib["serial_number"]),
            stream_id=str(calib.get("stream_id", "")),
            single_focal=single,
            extra=extra,
            _T_json=T_json,
        )
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InputError(source, f"invalid camera entry: {exc}", fix) from exc


def camera_to_json(cam: CameraModel) -> dict:
    """``cameras.json`` value of a camera; inverse of :func:`camera_from_json` (same JSON values)."""
    T_json = cam._T_json
    if T_json is None or not np.array_equal(se3_from_json(T_json), cam.T_world_from_eye):
        T_json = se3_to_json(cam.T_world_from_eye)
    calib: dict[str, Any] = {
        "label": cam.label,
        "serial_number": cam.serial_number,
        "image_width": cam.width,
        "image_height": cam.height,
        "projection_model_type": cam.model_type,
        "projection_params": cam.projection_params,
    }
    if cam.stream_id:
        calib["stream_id"] = cam.stream_id
    calib.update(cam.extra)
    return {"T_world_from_camera": T_json, "calibration": calib}


def cameras_from_json(d: dict, source: str | None = None) -> dict[str, CameraModel]:
    """All cameras of a ``cameras.json`` object, keyed by stream id."""
    if not isinstance(d, dict):
        raise InputError(source, f"cameras.json must be an object keyed by stream id, got {type(d).__name__}")
    where = source or "cameras.json"
    return {str(k): camera_from_json(v, f"{where}[{k!r}]") for k, v in d.items()}


# --------------------------------------------------------------------------------------------------
# Torch (differentiable)
# --------------------------------------------------------------------------------------------------


#: Depth (m) below which :func:`project_pinhole` divides by this value instead (keeps ``uv`` finite).
MIN_DEPTH = 1e-9


def project_pinhole(
    points_world: np.ndarray, T_world_from_eye: np.ndarray, K: np.ndarray, min_depth: float = MIN_DEPTH
) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection of world points into one camera (crop cameras), NumPy, float64.

    The pinhole maths is :meth:`CameraModel.eye_to_window`'s (``PinholePlane``: ``x / z · f + c``); this
    entry point takes the raw pose and intrinsics, as the crop cache stores them. Torch counterpart:
    :func:`project_pinhole_torch`.

    Args:
        points_world: ``(..., 3)`` metres.
        T_world_from_eye: ``(4, 4)`` camera pose.
        K: ``(4,)`` = ``fx, fy, cx, cy`` pixels.
        min_depth: depths with ``|z| < min_depth`` are divided as ``min_depth`` (``uv`` stays finite; such
            points are behind or on the camera plane for any caller that checks ``z``).

    Returns:
        ``(uv (..., 2) px, depth z (..., ) m)``, float64 (``z`` unguarded).
    """
    T = np.asarray(T_world_from_eye, dtype=np.float64)
    v = (np.asarray(points_world, dtype=np.float64) - T[:3, 3]) @ T[:3, :3]
    z = v[..., 2].copy()
    v[..., 2] = np.where(np.abs(z) < min_depth, min_depth, z)
    fx, fy, cx, cy = (float(k) for k in np.asarray(K).reshape(4))
    return _eye_to_window_np(v, "perspective", "none", (), fx, fy, cx, cy), z


def project_pinhole_torch(
    points_world: torch.Tensor, T_world_from_eye: torch.Tensor, K: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole projection of world points (crop cameras), differentiable; batched over cameras.

    Same maths as :func:`project_pinhole` (NumPy), without its depth guard (like the toolkit).

    Args:
        points_world: ``(..., N, 3)`` metres.
        T_world_from_eye: ``(..., 4, 4)``.
        K: ``(..., 4)`` = ``fx, fy, cx, cy`` pixels.

    Returns:
        ``(uv (..., N, 2) pixels, depth z (..., N) metres)``.
    """
    R = T_world_from_eye[..., :3, :3]
    t = T_world_from_eye[..., None, :3, 3]
    v = (points_world - t) @ R
    z = v[..., 2]
    f = K[..., None, 0:2]
    c = K[..., None, 2:4]
    return v[..., :2] / z[..., None] * f + c, z


# --------------------------------------------------------------------------------------------------
# Crop cameras
# --------------------------------------------------------------------------------------------------


def crop_camera(T_world_from_crop: np.ndarray, fov_rad: float, size: int, label: str = "crop") -> CameraModel:
    """Square ``PinholePlane`` crop camera of spec/formats.md §3.8: ``f = (S/2)/tan(fov/2)``, ``c = (S−1)/2``.

    Args:
        T_world_from_crop: ``(4, 4)`` pose of the crop camera (stored as float32).
        fov_rad: full field of view, radians.
        size: crop side S, pixels.
    """
    if not (0 < fov_rad < math.pi):
        raise ValueError(f"crop fov must be in (0, π) radians, got {fov_rad}")
    f = (size / 2.0) / math.tan(fov_rad / 2.0)
    c = (size - 1) / 2.0
    return CameraModel("PinholePlane", size, size, f, f, c, c, np.zeros(0), T_world_from_crop, label=label)


def crop_camera_from_points(
    T_world_from_cam: np.ndarray,
    points_world: np.ndarray,
    focal_multiplier: float = 0.95,
    camera_angle_deg: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Crop camera looking at a point set from the source camera's centre (UmeTrack, spec/formats.md §3.11).

    Args:
        T_world_from_cam: ``(4, 4)`` source camera pose.
        points_world: ``(N, 3)`` crop points, metres.
        focal_multiplier: fraction of the half-crop at which the extreme point lands.
        camera_angle_deg: roll about the crop axis, degrees.

    Returns:
        ``(T_world_from_crop (4, 4) float64, fov radians)`` with ``fov = 2·atan(M / focal_multiplier)``.

    Raises:
        ValueError: a point is (nearly) behind the crop camera (``z < 1e-4``) or input is empty.
    """
    T = np.asarray(T_world_from_cam, dtype=np.float64)
    P = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    if P.shape[0] == 0:
        raise ValueError("crop_camera_from_points needs at least one point")
    Rc, tc = T[:3, :3], T[:3, 3]
    m_w = 0.5 * (P.min(0) + P.max(0))
    m_e = Rc.T @ (m_w - tc)
    norm = float(np.linalg.norm(m_e))
    if not norm > 1e-9:
        raise ValueError(
            "crop_camera_from_points: the points' bounding-box centre coincides with the camera centre"
        )
    zp = m_e / norm
    a = np.array([0.0, 0.0, 1.0])
    w = np.cross(a, zp)
    s2 = float(w @ w)
    c = float(a @ zp)
    W = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    dR = np.eye(3) + W + W @ W * (1.0 - c) / max(s2, 1e-15)
    al = math.radians(camera_angle_deg)
    Rz = np.array([[math.cos(al), -math.sin(al), 0.0], [math.sin(al), math.cos(al), 0.0], [0.0, 0.0, 1.0]])
    R_new = Rc @ dR @ Rz
    T_new = np.eye(4)
    T_new[:3, :3] = R_new
    T_new[:3, 3] = tc
    v = (P - tc) @ R_new
    if np.any(v[:, 2] < 1e-4):
        raise ValueError(
            f"crop_camera_from_points: {int(np.sum(v[:, 2] < 1e-4))} point(s) lie behind or too close to the "
            "crop camera plane (z < 1e-4 m); the point set spans too wide an angle from the camera"
        )
    n = v[:, :2] / v[:, 2:3]
    M = float(np.abs(n).max())
    fov = 2.0 * math.atan(M / focal_multiplier)
    return T_new, fov


def count_visible(points_world: np.ndarray, cam: CameraModel, margin: float = 0.0) -> int:
    """Number of points in front of ``cam`` (z > 0) that project to ``−m ≤ x ≤ W−1+m``,
    ``−m ≤ y ≤ H−1+m`` (UmeTrack tracker rule of spec/formats.md §3.11 with an optional margin, pixels)."""
    v = cam.world_to_eye(np.asarray(points_world, dtype=np.float64).reshape(-1, 3))
    front = v[:, 2] > 0
    w = cam.eye_to_window(v)
    inside = (
        (w[:, 0] >= -margin)
        & (w[:, 0] <= cam.width - 1 + margin)
        & (w[:, 1] >= -margin)
        & (w[:, 1] <= cam.height - 1 + margin)
    )
    return int(np.sum(front & inside))


# --------------------------------------------------------------------------------------------------
# Warp (spec/formats.md §3.9)
# --------------------------------------------------------------------------------------------------


def _check_warp_cams(src_cam: CameraModel, dst_cam: CameraModel) -> None:
    if not dst_cam.is_pinhole:
        raise ValueError(f"warp destination camera must be PinholePlane, got {dst_cam.model_type!r}")


def warp_maps_reference(src_cam: CameraModel, dst_cam: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """Toolkit-style float32 remap maps ``(map_x, map_y)``, shape ``(H', W')``, float64 maths (spec/formats.md §3.9)."""
    _check_warp_cams(src_cam, dst_cam)
    W, H = dst_cam.width, dst_cam.height
    xs, ys = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    win = np.stack([xs.ravel(), ys.ravel()], -1)
    rays = dst_cam.window_to_eye(win)
    world = dst_cam.eye_to_world(rays)
    v = src_cam.world_to_eye(world)
    m = src_cam.eye_to_window(v)
    m[v[:, 2] < 0] = -1.0
    m = m.astype(np.float32)
    return m[:, 0].reshape(H, W), m[:, 1].reshape(H, W)


def warp_image_reference(image: np.ndarray, src_cam: CameraModel, dst_cam: CameraModel) -> np.ndarray:
    """Straightforward toolkit-style warp (spec/formats.md §3.9): per-call float64 maps, then ``cv2.remap``.

    Test and benchmark reference for :func:`warp_image` (``tests/test_cameras.py``, ``benchmarks/bench_crop_warp.py``,
    ``benchmarks/bench_cache_crops.py``); the pipeline does not call it.
    """
    mx, my = warp_maps_reference(src_cam, dst_cam)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _lagrange_weights(x: np.ndarray, step: int, n_coarse: int) -> np.ndarray:
    """``(len(x), n_coarse)`` float64 4-point cubic Lagrange weights of positions ``x`` (fine pixels) from
    coarse nodes at ``k·step``; interval ``k = x // step`` uses nodes ``k0..k0+3``, ``k0 = clip(k−1, 0, n−4)``."""
    x = np.asarray(x, dtype=np.float64)
    k0 = np.clip(np.floor(x / step).astype(int) - 1, 0, n_coarse - 4)
    A = np.zeros((x.size, n_coarse))
    for a in range(4):
        w = np.ones(x.size)
        for b in range(4):
            if b != a:
                w *= (x - (k0 + b) * step) / ((a - b) * step)
        A[np.arange(x.size), k0 + a] = w
    return A


@dataclass(frozen=True)
class _AxisPlan:
    """Cubic Lagrange upsampling of ``n`` coarse nodes (pixels ``0, step, 2·step, ...``) to ``n_fine`` pixels.

    Attributes:
        n: coarse nodes, ``max(4, ceil((n_fine − 1)/step) + 1)``.
        n_int: whole ``step``-pixel intervals covering the fine pixels, ``ceil(n_fine/step)``.
        idx: ``(4·n_int,)`` node indices of the 4-node stencil of each interval (``k0 = clip(k−1, 0, n−4)``).
        W4: ``(n_int, 4, step)`` float32 weights (stencil node, pixel within the interval).
        W4T: ``(n_int, step, 4)`` contiguous transpose of ``W4``.
        k0: ``(n − 1,)`` first stencil node of the intervals between consecutive nodes.
        cell: ``(n_fine,)`` interval ``min(i // step, n − 2)`` of each fine pixel.
    """

    n: int
    n_int: int
    idx: np.ndarray
    W4: np.ndarray
    W4T: np.ndarray
    k0: np.ndarray
    cell: np.ndarray


@lru_cache(maxsize=64)
def _axis_plan(n_fine: int, step: int) -> _AxisPlan:
    """Cached :class:`_AxisPlan` of one axis (read-only arrays)."""
    n = max(4, -(-(n_fine - 1) // step) + 1)
    n_int = -(-n_fine // step)
    A = np.zeros((n_int * step, n), dtype=np.float32)
    A[:n_fine] = _lagrange_weights(np.arange(n_fine), step, n)
    k0b = np.clip(np.arange(n_int) - 1, 0, n - 4)
    idx = (k0b[:, None] + np.arange(4)).ravel()
    W4 = np.ascontiguousarray(
        np.stack([A[k * step : (k + 1) * step, k0b[k] : k0b[k] + 4].T for k in range(n_int)])
    )
    W4T = np.ascontiguousarray(W4.transpose(0, 2, 1))
    k0 = np.clip(np.arange(n - 1) - 1, 0, n - 4)
    cell = np.minimum(np.arange(n_fine) // step, n - 2)
    for arr in (idx, W4, W4T, k0, cell):
        arr.setflags(write=False)
    return _AxisPlan(n, n_int, idx, W4, W4T, k0, cell)


@lru_cache(maxsize=64)
def _grid_pixels(step: int, nx: int, ny: int) -> np.ndarray:
    """Cached homogeneous pixel coordinates ``(3, P)`` float64, rows ``x, y, 1``: the ``ny×nx`` coarse nodes
    (row-major) followed by the ``(ny−1)×(nx−1)`` interval centres."""
    nodes = np.meshgrid(np.arange(nx) * step, np.arange(ny) * step)
    mids = np.meshgrid((np.arange(nx - 1) + 0.5) * step, (np.arange(ny - 1) + 0.5) * step)
    G = np.ones((3, nx * ny + (nx - 1) * (ny - 1)))
    for row in range(2):
        G[row] = np.concatenate([nodes[row].ravel(), mids[row].ravel()])
    G.setflags(write=False)
    return G


@lru_cache(maxsize=16)
def _fisheye_feature_matrix(
    fx: float, fy: float, cx: float, cy: float, coeffs: tuple
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Linear part of the OVR62/OVR624 distortion + intrinsics (see :func:`_fisheye_rows`).

    Returns:
        ``(Mq, ks)``: ``Mq (2, F)`` float64 mapping the features ``(ux, uy, ux², uy², ux·uy, 1[, s²²])`` to
        window pixels (``F`` = 6, or 7 when the thin-prism s2/s4 terms are non-zero), and the radial
        coefficients ``(k1..k6)``.
    """
    k1, k2, k3, k4, k5, k6, p1, p2, s1, s2c, s3, s4 = (float(c) for c in coeffs)
    rows = [
        [fx, 0.0, fx * (3.0 * p1 + s1), fx * (p1 + s1), 2.0 * fx * p2, cx],
        [0.0, fy, fy * (p2 + s3), fy * (3.0 * p2 + s3), 2.0 * fy * p1, cy],
    ]
    if s2c != 0.0 or s4 != 0.0:
        rows[0].append(fx * s2c)
        rows[1].append(fy * s4)
    Mq = np.array(rows)
    Mq.setflags(write=False)
    return Mq, (k1, k2, k3, k4, k5, k6)


def _fisheye_rows(v: np.ndarray, fx: float, fy: float, cx: float, cy: float, coeffs: tuple) -> np.ndarray:
    """Arctan projection + OVR62/OVR624 distortion of rays in rows, with few array operations.

    The one NumPy implementation of the fisheye models' eye → window map (spec/formats.md §3.5-3.6):
    ``eye_to_window`` and the warp maps both use it.

    Args:
        v: ``(3, P)`` float64 eye-frame points or rays (any positive scale), rows ``x, y, z``.
        fx, fy, cx, cy: intrinsics, pixels.
        coeffs: canonical distortion coefficients ``(k1..k6, p1, p2, s1..s4)`` (:func:`_canonical_coeffs`).

    Returns:
        ``(2, P)`` float64 window coordinates, pixels. Same maths as ``_project_xyz`` + ``_distort``: with
        ``r = |(x, y)|`` and ``θ = atan2(r, z)`` the undistorted point is ``u = (x, y)·θ·radial(θ²)/r``,
        then ``q = u + tangential(u) + thin-prism(u)``, which is linear in the features
        ``(ux, uy, ux², uy², ux·uy, 1[, |u|⁴])`` and is applied as one ``(2, F) @ (F, P)`` product.
    """
    Mq, ks = _fisheye_feature_matrix(float(fx), float(fy), float(cx), float(cy), tuple(coeffs))
    n_feat = Mq.shape[1]
    P = v.shape[1]
    x, y, z = v
    r = x * x
    r += y * y
    np.sqrt(r, out=r)
    if P and z.min() > 0:  # atan2(r, z) = atan(r/z) for z > 0 (about twice as fast)
        theta = np.divide(r, z)
        np.arctan(theta, out=theta)
    else:
        theta = np.arctan2(r, z)
    t2 = theta * theta  # θ ∈ [0, π], so the spec/formats.md §3.5 clamp r² ≤ π² never applies
    f = ks[5] * t2
    for k in ks[4::-1]:
        f += k
        f *= t2
    f += 1.0
    f *= theta
    np.maximum(r, _EPS_R, out=r)
    f /= r
    feat = np.empty((n_feat, P))
    np.multiply(v[:2], f, out=feat[:2])
    np.multiply(feat[:2], feat[:2], out=feat[2:4])
    np.multiply(feat[0], feat[1], out=feat[4])
    feat[5] = 1.0
    if n_feat == 7:
        s2 = feat[2] + feat[3]
        np.multiply(s2, s2, out=feat[6])
    return Mq @ feat


def _window_rows(v: np.ndarray, cam: CameraModel) -> np.ndarray:
    """Window coordinates ``(2, P)`` of eye rays ``v (3, P)`` float64 for any source model (the fisheyes reach
    :func:`_fisheye_rows` through ``eye_to_window`` without copies: the transposes are views)."""
    return np.ascontiguousarray(cam.eye_to_window(v.T).T)


_Z_SAFE = 0.15  # rays with z/|v| below this (θ > ~81°) are computed exactly instead of interpolated
_MAP_TOL = 1e-3  # px; interval centres whose interpolation error exceeds this are computed exactly


def warp_maps(src_cam: CameraModel, dst_cam: CameraModel, step: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Fast float32 remap maps ``(map_x, map_y)`` ``(H', W')`` equal to :func:`warp_maps_reference` up to
    ~1e-3 px inside the source image (behind-camera mask exact).

    When the two cameras share the optical centre (the crop-camera case, spec/formats.md §3.11), source rays are the
    destination pinhole rays rotated by ``R_srcᵀ R_dst`` (depth irrelevant); the exact map is evaluated on a
    ``step``-pixel grid and upsampled with separable cubic Lagrange interpolation. Cells whose stencil
    reaches a ray with ``z/|v| < 0.15`` or whose interpolation error at the cell centre exceeds 1e-3 px
    (unless the whole cell maps beyond one side of the source image) are computed exactly. Otherwise
    (different centres, tiny crops) the exact map is computed in float64 at full resolution, as the
    reference does.

    A map error of at most 1e-3 px changes a bilinear sample of a uint8 image by at most
    ``255·(|Δx| + |Δy|) ≤ 0.51`` grey levels, so the warped crop differs from the reference by at most one
    grey level where the bound holds.
    """
    if step < 2 or step % 2:
        raise ValueError(f"step must be an even number >= 2, got {step}")
    _check_warp_cams(src_cam, dst_cam)
    Ts, Td = src_cam.T_world_from_eye, dst_cam.T_world_from_eye
    shared = Ts[0, 3] == Td[0, 3] and Ts[1, 3] == Td[1, 3] and Ts[2, 3] == Td[2, 3]
    if not shared or min(dst_cam.width, dst_cam.height) < 4 * step:
        return warp_maps_reference(src_cam, dst_cam)
    M = Ts[:3, :3].T.astype(np.float64) @ Td[:3, :3].astype(np.float64)
    return _shared_centre_maps(src_cam, M, dst_cam, step)


def _shared_centre_maps(
    src_cam: CameraModel, M: np.ndarray, dst_cam: CameraModel, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Maps ``(map_x, map_y)`` ``(H', W')`` float32 of a pinhole crop camera sharing the source's centre.

    Args:
        src_cam: source camera.
        M: ``(3, 3)`` float64 rotation source-eye-from-destination-eye.
        dst_cam: destination ``PinholePlane`` camera.
        step: coarse grid spacing, pixels (even).
    """
    W, H = dst_cam.width, dst_cam.height
    fx, fy, cx, cy = dst_cam.fx, dst_cam.fy, dst_cam.cx, dst_cam.cy
    px, py = _axis_plan(W, step), _axis_plan(H, step)
    nx, ny = px.n, py.n
    n_nodes = nx * ny
    G = _grid_pixels(step, nx, ny)  # (3, P): coarse nodes, then interval centres
    # Rays v = M K⁻¹ (x, y, 1) as rows (3, P).
    A = M * np.array([1.0 / fx, 1.0 / fy, 1.0])
    A[:, 2] -= A[:, 0] * cx + A[:, 1] * cy
    v = A @ G
    w_all = _window_rows(v, src_cam)  # (2, P) float64
    # Separable banded upsampling (4 taps per axis; small per-interval products so that BLAS never spins up
    # threads): along x for the 2·ny coarse rows, then along y, writing (2, Hp, Wp) maps directly (Hp, Wp:
    # sizes rounded up to whole intervals).
    Wp, Hp = px.n_int * step, py.n_int * step
    crow = w_all[:, :n_nodes].astype(np.float32).reshape(2 * ny, nx)
    g = crow[:, px.idx].reshape(2 * ny, px.n_int, 4).transpose(1, 0, 2)  # (n_int_x, 2·ny, 4)
    t = np.empty((2 * ny, Wp), dtype=np.float32)
    np.matmul(g, px.W4, out=t.reshape(2 * ny, px.n_int, step).transpose(1, 0, 2))
    g = t.reshape(2, ny, Wp)[:, py.idx].reshape(2, py.n_int, 4, Wp)  # the 4 coarse rows of each y interval
    full = np.empty((2, Hp, Wp), dtype=np.float32)
    np.matmul(py.W4T, g, out=full.reshape(2, py.n_int, step, Wp))  # out=: a fresh result is not C-ordered
    maps = full[:, :H, :W]
    if (Hp, Wp) != (H, W):
        maps = np.ascontiguousarray(maps)
    map_x, map_y = maps[0], maps[1]
    # Interpolation error at the interval centres ((k+½)·step are pixels of the padded map: step is even).
    h = step // 2
    wm = w_all[:, n_nodes:].reshape(2, ny - 1, nx - 1)
    err = np.abs(full[:, h::step, h::step][:, : ny - 1, : nx - 1] - wm)
    bad_cell = None
    if err.max() > _MAP_TOL:
        bad_cell = (err > _MAP_TOL).any(0)
        # ignore cells whose 4 corner nodes and centre all lie beyond one image side
        c = w_all[:, :n_nodes].reshape(2, ny, nx)
        corners = [c[:, :-1, :-1], c[:, 1:, :-1], c[:, :-1, 1:], c[:, 1:, 1:], wm]
        lo, hi = np.minimum.reduce(corners), np.maximum.reduce(corners)
        mg = 4.0
        far = (hi[0] < -mg) | (lo[0] > src_cam.width + mg) | (hi[1] < -mg) | (lo[1] > src_cam.height + mg)
        bad_cell &= ~far
    # The angle between a ray through the dst image plane and the src axis is quasiconvex on that plane,
    # so its maximum over the node rectangle is at a corner node: test those four first.
    corners = v[:, [0, nx - 1, n_nodes - nx, n_nodes - 1]].T.tolist()
    if not all(z >= _Z_SAFE * math.sqrt(x * x + y * y + z * z) for x, y, z in corners):
        vn = v[:, :n_nodes]
        bad_nodes = (vn[2] < _Z_SAFE * np.sqrt(np.einsum("ij,ij->j", vn, vn))).reshape(ny, nx)
        bad_k0 = np.zeros((ny, nx), dtype=bool)
        for dy in range(4):
            for dx in range(4):
                bad_k0[: ny - dy, : nx - dx] |= bad_nodes[dy:, dx:]
        near_edge = bad_k0[py.k0[:, None], px.k0[None, :]]
        bad_cell = near_edge if bad_cell is None else bad_cell | near_edge
    if bad_cell is not None and bad_cell.any():
        xn = (np.arange(W) - cx) / fx
        yn = (np.arange(H) - cy) / fy
        fine_bad = bad_cell[py.cell[:, None], px.cell[None, :]]
        jj, ii = np.nonzero(fine_bad)
        vv = xn[ii, None] * M[:, 0] + yn[jj, None] * M[:, 1] + M[:, 2]
        front = vv[:, 2] >= 0
        we = src_cam.eye_to_window(vv[front])
        map_x[jj[front], ii[front]] = we[:, 0]
        map_y[jj[front], ii[front]] = we[:, 1]
    # Exact behind-camera mask: z is affine in the normalised crop coordinates (xn, yn); its minimum over the
    # crop is at a corner.
    x0, x1, y0, y1 = -cx / fx, (W - 1 - cx) / fx, -cy / fy, (H - 1 - cy) / fy
    m20, m21, m22 = (float(a) for a in M[2])
    if min(m20 * x + m21 * y + m22 for x in (x0, x1) for y in (y0, y1)) < 0:
        xn = (np.arange(W) - cx) / fx
        yn = (np.arange(H) - cy) / fy
        behind = (xn[None, :] * m20) + (yn[:, None] * m21 + m22) < 0
        map_x[behind] = -1.0
        map_y[behind] = -1.0
    return map_x, map_y


def warp_image(
    image: np.ndarray, src_cam: CameraModel, dst_cam: CameraModel, out: np.ndarray | None = None
) -> np.ndarray:
    """Warp a source image into a pinhole crop camera (spec/formats.md §3.9), fast; = :func:`warp_image_reference`.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8 (or float) source image of ``src_cam``.
        src_cam: source camera (any model).
        dst_cam: destination ``PinholePlane`` camera.
        out: optional preallocated output ``(H', W'[, 3])``.

    Returns:
        ``(H', W')`` or ``(H', W', 3)`` crop; pixels behind the source camera or outside its image are 0.
    """
    mx, my = warp_maps(src_cam, dst_cam)
    if out is None:
        return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    cv2.remap(image, mx, my, cv2.INTER_LINEAR, dst=out, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out
