"""Multi-view hand network: timm backbone → UV regressor → lifting MLP → split FTL → fusion → MANO heads.

Data flow for B hands with V view slots (spec/model.md §2; all hands are right hands, left hands are mirrored
by the data pipeline, spec/model.md §2.5)::

    images (B, V, C, S, S) ──backbone (shared)──► feature map (B·V, D, h, w) + pooled f2d (B·V, D')
      ├─ UV head (soft-argmax heatmaps or regressor) ─► uv (B, V, 20, 2) crop px, conf (B, V, 20)
      └─ lifting MLP [f2d, uv/S, log(f/S / f0)] ─► P_inv, P_var (B, V, N, 3) "3D feature points", eye frame
    split FTL (parameter-free, R_i = world-from-eye rotation of view i, c_i its centre, a the anchor):
      F_inv_i = R_i P_inv                               (translation invariant: world rotation only)
      F_var_i = R_i diag(1, 1, (f_i/S)/f0) P_var + (c_i − a)   (translation variant, focal z-scaling)
    fusion: views concatenated in slot order, masked slots zeroed, mask appended
      X_inv ─► param head ─► pose_pca (15), betas (10), global rotation (6D → 3x3, world frame)
      root joint r (anchor frame, m) = mean over valid views of F_var_i[0] (a root "read off" the variant
      branch) + position head MLP([X_var, X_inv]) (residual);  root_world = r + a
    MANO (right layer, landmark path): transl = r − J0(β) ─► landmarks (B, 20, 3) world, m

The anchor ``a`` is a per-sample point (default: mean of the valid crop-camera centres); it only
re-centres the regression target, the world rotation frame is kept.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from mvhand._compat import import_timm
from mvhand.geometry.transforms import rotation_6d_to_matrix
from mvhand.io_utils import InputError

__all__ = [
    "NUM_KP",
    "HandNetConfig",
    "HandNetOutput",
    "HandNet",
    "HeatmapUV",
    "RegressUV",
    "heatmap_cell_centres",
    "create_backbone",
    "load_backbone_weights",
    "read_backbone_weights",
    "pretrained_model_name",
    "pretrained_hub_repo",
    "resample_pos_embed",
    "split_ftl",
    "masked_anchor",
    "resolve_device",
]

NUM_KP = 20  # canonical landmarks predicted per view (2D) and per hand (3D)
IMAGE_MEAN = 0.45  # normalisation of [0, 1] grey levels fed to the backbone
IMAGE_STD = 0.25


def resolve_device(device: str) -> torch.device:
    """The torch device to run the network on: ``auto`` → cuda if available else cpu; ``cpu``; ``cuda[:i]``.

    Raises:
        InputError: ``cuda`` requested without a GPU (the fix: ``--device cpu``).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            None, f"device {device!r} requested but no CUDA GPU is available", "use --device cpu"
        )
    return torch.device(device)


@dataclass
class HandNetConfig:
    """Everything needed to rebuild a :class:`HandNet` (stored in ``model.pt`` and checkpoints).

    Attributes:
        backbone: timm model name (``hiera_base_224`` for the paper preset).
        img_size: side S of the square training crop, pixels (Hiera: multiple of 32).
        views: number V of view slots (1…4).
        in_chans: image channels fed to the backbone (1 = grey, 3 = grey replicated / RGB).
        n_points: N 3D feature points per branch and view.
        hidden: width of the lifting MLP and the heads.
        uv_head: ``"heatmap"`` — integral regression (spec/model.md §2.2's stronger alternative,
            :class:`HeatmapUV`): the last feature map is brought to stride 8 with the backbone's own
            stride-16/8 maps as skips (7×7 → 28×28 for Hiera-base at 224 px, 3×3 → 12×12 for
            MobileNetV3 at 96 px), the 2D keypoint is the soft-argmax of 20 heatmaps and the confidence
            a learnt per-keypoint calibration of their spread; ``"regress"`` — the map is pooled to
            ``uv_grid × uv_grid`` cells and an MLP regresses the 20 (u, v, confidence logit).
        uv_grid: pooled grid of the ``"regress"`` head.
        uv_upsample: number of 2× deconvolutions of the ``"heatmap"`` head for backbones without
            ``forward_intermediates`` (no skips).
        focal_ref: canonical normalised focal f0 (f/S) of the z-scaling and of the log-focal input.
        uv_detach: feed the UV prediction to the lifting MLP without gradient.
        position_mode: ``"point"`` — the root is read off the variant branch (mean over valid views
            of each view's first variant point, i.e. a root predicted in that camera and moved by the
            FTL) plus the position-head MLP as a residual; ``"mlp"`` — the position-head MLP alone.
        root_depth: canonical depth (m, before the focal z-scaling) added to the first variant point,
            so that the initial root lies in front of the cameras.
    """

    backbone: str = "mobilenetv3_small_100"
    img_size: int = 128
    views: int = 2
    in_chans: int = 1
    n_points: int = 64
    hidden: int = 512
    uv_grid: int = 4
    focal_ref: float = 1.0
    uv_detach: bool = False
    position_mode: str = "point"
    root_depth: float = 0.5
    uv_head: str = "heatmap"
    uv_upsample: int = 2

    @classmethod
    def from_dict(cls, d: dict) -> HandNetConfig:
        """Build from a dict, ignoring unknown keys.

        A dict without ``uv_head`` comes from a model written before the heatmap head existed, i.e. a
        ``"regress"`` model.
        """
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw.setdefault("uv_head", "regress")
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HandNetOutput:
    """Outputs of :meth:`HandNet.forward` (B hands, V view slots).

    Attributes:
        uv: (B, V, 20, 2) predicted 2D landmarks in pixels of the S×S input crop of each view.
        uv_norm: (B, V, 20, 2) the same divided by S (what the UV loss sees).
        conf: (B, V, 20) per-keypoint confidence in [0, 1].
        conf_logits: (B, V, 20) logits of ``conf``.
        pose_pca: (B, 15) MANO PCA pose coefficients (right hand).
        betas: (B, 10) MANO shape coefficients.
        global_rot: (B, 3, 3) MANO global rotation, world frame.
        root_rel: (B, 3) root joint position relative to the anchor, m.
        root: (B, 3) root joint position, world, m.
        anchor: (B, 3) the anchor, world, m.
        landmarks: (B, 20, 3) canonical landmarks, world, m (None when the net has no MANO layer).
        feat_inv: (B, V, N, 3) translation-invariant FTL features (world rotation frame).
        feat_var: (B, V, N, 3) translation-variant FTL features (anchor frame).
        uv_heatmap_logits: (B, V, 20, H, W) heatmap logits of the ``"heatmap"`` UV head (None for
            ``"regress"``); cell (i, j) is centred on crop pixel ``(j·S/W + (S/W − 1)/2, …)``.
    """

    uv: torch.Tensor
    uv_norm: torch.Tensor
    conf: torch.Tensor
    conf_logits: torch.Tensor
    pose_pca: torch.Tensor
    betas: torch.Tensor
    global_rot: torch.Tensor
    root_rel: torch.Tensor
    root: torch.Tensor
    anchor: torch.Tensor
    landmarks: torch.Tensor | None
    feat_inv: torch.Tensor
    feat_var: torch.Tensor
    uv_heatmap_logits: torch.Tensor | None = None


def create_backbone(
    name: str, img_size: int, in_chans: int = 1, pretrained_file: str | os.PathLike | None = None
) -> nn.Module:
    """A timm model without classifier (``num_classes=0``), never touching the network.

    Args:
        name: timm model name, optionally with a pretrained tag (``hiera_base_224.mae_in1k_ft_in1k``).
        img_size: input side; passed as ``img_size`` to models that take it (ViT, Hiera).
        in_chans: input channels.
        pretrained_file: optional local weights file in timm's format (see :func:`load_backbone_weights`).

    Raises:
        ValueError: unknown model name, or a Hiera size that is not a multiple of 32.
        InputError: the weights file is missing, unreadable or does not fit the backbone.
    """
    timm = import_timm()
    if not timm.is_model(name.split(".", 1)[0]):
        raise ValueError(f"unknown timm backbone {name!r} (see timm.list_models())")
    if "hiera" in name and img_size % 32:
        raise ValueError(f"Hiera backbones need img_size to be a multiple of 32, got {img_size}")
    if pretrained_file is not None and not os.path.isfile(pretrained_file):
        raise InputError(
            pretrained_file,
            "backbone weights file not found",
            "set train.pretrained_file to a local timm weights file",
        )
    kwargs: dict = dict(pretrained=False, num_classes=0, in_chans=in_chans)
    try:
        model = timm.create_model(name, img_size=img_size, **kwargs)
    except TypeError:  # CNNs take any input size and reject the keyword
        model = timm.create_model(name, **kwargs)
    if pretrained_file is not None:
        load_backbone_weights(model, pretrained_file)
    return model


def read_backbone_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a timm weights file: ``.safetensors``, or a ``.pth``/``.bin`` read with ``weights_only``
    (no code from the file runs); a ``state_dict``/``model``/EMA wrapper is unwrapped as timm does."""
    timm = import_timm()
    path = os.fspath(path)
    try:
        state = timm.models.load_state_dict(path, use_ema=True, weights_only=True)
    except Exception as exc:  # corrupt, truncated, or a pickle that is more than tensors
        raise InputError(
            path,
            f"cannot load the backbone weights ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            "use a timm weights file from a source you trust (model.safetensors from the model's Hugging Face "
            "repo, or a .pth/.bin holding only tensors); re-download it if it was cut short",
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "backbone weights file holds no tensor state dict", "use a timm weights file")
    return state


def pretrained_model_name(backbone: str, pretrained: str) -> str:
    """timm's ``arch.tag`` name of pretrained weights: ``pretrained`` is a tag of ``backbone``
    (``mae_in1k_ft_in1k``) or a full name whose architecture must be ``backbone``.

    Raises:
        ValueError: a full name of another architecture.
    """
    arch, dot, tag = pretrained.partition(".")
    if not dot:
        return f"{backbone}.{pretrained}"
    if arch != backbone:
        raise ValueError(
            f"train.pretrained {pretrained!r} is for {arch!r} but train.backbone is {backbone!r}; "
            f"give the tag only ({tag!r}) or the matching backbone"
        )
    return pretrained


def pretrained_hub_repo(name: str) -> str:
    """Hugging Face repository of timm's pretrained weights ``arch.tag`` (e.g. ``timm/hiera_base_224.mae``).

    Raises:
        ValueError: unknown model or tag (the message lists the tags timm knows), or weights that timm
            does not host on the Hub.
    """
    timm = import_timm()
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        raise ValueError(f"unknown timm model {arch!r} (see timm.list_models())")
    known = timm.list_pretrained(f"{arch}.*")
    if name not in known:
        raise ValueError(
            f"timm has no pretrained weights {name!r}; tags of {arch}: {', '.join(known) or 'none'}"
        )
    cfg = timm.models.get_pretrained_cfg(name)
    if not cfg.hf_hub_id:
        raise ValueError(
            f"timm's weights {name!r} are not on the Hugging Face Hub ({cfg.url or 'no URL'}); download them "
            "yourself and set train.pretrained_file"
        )
    return cfg.hf_hub_id


def resample_pos_embed(pos: torch.Tensor, shape: torch.Size, num_prefix_tokens: int = 0) -> torch.Tensor:
    """Resample a square absolute position embedding to another token grid (bicubic, antialiased).

    Args:
        pos: (1, N0, C) with N0 = prefix + g0², or (1, C, h0, w0).
        shape: target shape, (1, N, C) with N = prefix + g², or (1, C, h, w).
        num_prefix_tokens: class/register tokens kept as they are (3-D layout only).

    Raises:
        ValueError: the grids are not square, or the layouts differ.
    """
    if pos.ndim == 4 and len(shape) == 4 and pos.shape[:2] == shape[:2]:
        return nn.functional.interpolate(
            pos.float(), size=tuple(shape[2:]), mode="bicubic", align_corners=False, antialias=True
        ).to(pos.dtype)
    if pos.ndim != 3 or len(shape) != 3 or pos.shape[0] != 1 or pos.shape[2] != shape[2]:
        raise ValueError(
            f"cannot resample a position embedding of shape {tuple(pos.shape)} to {tuple(shape)}"
        )
    g0, g = math.isqrt(pos.shape[1] - num_prefix_tokens), math.isqrt(shape[1] - num_prefix_tokens)
    if g0 * g0 != pos.shape[1] - num_prefix_tokens or g * g != shape[1] - num_prefix_tokens:
        raise ValueError(f"position embeddings {tuple(pos.shape)} -> {tuple(shape)} are not square grids")
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(pos, [g, g], [g0, g0], num_prefix_tokens=num_prefix_tokens)


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load pretrained weights written in timm's format into a ``num_classes=0`` backbone, offline.

    The file is what ``timm.create_model(name, pretrained=True)`` would fetch (e.g. ``model.safetensors``
    of the Hugging Face repo ``timm/hiera_base_224.mae_in1k_ft_in1k``) or a ``torch.save`` of a timm
    model's ``state_dict()``. As timm's own loader does, the model family's ``checkpoint_filter_fn`` is
    applied, the first convolution is adapted to ``in_chans`` (e.g. summed over RGB for grey input) and
    the classifier is dropped; in addition an absolute position embedding trained at another input size
    is resampled to this model's token grid (Hiera at ``img_size`` != 224). Every other tensor must match
    by name and shape: anything missing, left over or mis-shaped raises instead of leaving layers at
    their random initialisation.

    Raises:
        InputError: unreadable file, or weights that do not fit this backbone (names the first keys).
    """
    import sys

    timm = import_timm()
    path = os.fspath(path)
    state = read_backbone_weights(path)
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except TypeError:  # filters of older families take the state dict only
            state = filter_fn(state)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    own = model.state_dict()
    first_convs = cfg.get("first_conv") or ()
    for conv in (first_convs,) if isinstance(first_convs, str) else first_convs:
        key = f"{conv}.weight"
        if key in state and key in own and state[key].ndim == 4 and state[key].shape[1] != own[key].shape[1]:
            base = (cfg.get("input_size") or state[key].shape[1:2])[0]
            state[key] = timm.models.adapt_input_conv(own[key].shape[1], state[key], base_chans=base)
    classifiers = cfg.get("classifier") or ()
    for head in (classifiers,) if isinstance(classifiers, str) else classifiers:
        for suffix in (".weight", ".bias"):
            if f"{head}{suffix}" not in own:
                state.pop(f"{head}{suffix}", None)
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    name = cfg.get("architecture") or type(model).__name__
    fix = (
        f"use weights written for {name} (`hf download timm/{name}.<tag> model.safetensors`), or set "
        "train.backbone to the model the file was written for"
    )
    for key, value in state.items():
        if key in own and value.shape != own[key].shape and "pos_embed" in key:
            try:
                state[key] = resample_pos_embed(value, own[key].shape, prefix)
            except ValueError as exc:
                raise InputError(
                    path, f"{key}: {exc}", f"set train.img_size to the weights' size; {fix}"
                ) from None
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k not in own]
    for what, keys in (("mis-shaped", wrong), ("missing", missing), ("unexpected", extra)):
        if keys:
            raise InputError(
                path,
                f"weights do not fit backbone {name}: {len(keys)} {what} tensors ({', '.join(keys[:3])})",
                fix,
            )
    model.load_state_dict(state, strict=False)


def masked_anchor(centres: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the valid camera centres.

    Args:
        centres: (B, V, 3) crop-camera centres, world, m.
        view_mask: (B, V) 1 for valid views (at least one per sample).

    Returns:
        (B, 3) anchor, m.
    """
    m = view_mask.to(centres.dtype)[..., None]
    return (centres * m).sum(1) / m.sum(1).clamp_min(1.0)


def split_ftl(
    p_inv: torch.Tensor,
    p_var: torch.Tensor,
    T_world_from_crop: torch.Tensor,
    focal_norm: torch.Tensor,
    anchor: torch.Tensor,
    view_mask: torch.Tensor,
    focal_ref: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameter-free split feature transform layer (spec/model.md §2.3).

    Args:
        p_inv: (B, V, N, 3) invariant-branch points in each crop camera's eye frame.
        p_var: (B, V, N, 3) variant-branch points in each crop camera's eye frame.
        T_world_from_crop: (B, V, 4, 4) crop camera poses.
        focal_norm: (B, V) focal length divided by the crop side (f/S).
        anchor: (B, 3) per-sample anchor, world, m.
        view_mask: (B, V) 1 for valid views; features of invalid views are zeroed.
        focal_ref: canonical normalised focal f0.

    Returns:
        ``(F_inv, F_var)``, each (B, V, N, 3): ``R p_inv`` (world rotation frame) and
        ``R diag(1, 1, f/f0) p_var + (c − a)`` (world rotation frame centred on the anchor).
    """
    R = T_world_from_crop[..., :3, :3]  # (B, V, 3, 3)
    c = T_world_from_crop[..., :3, 3]  # (B, V, 3)
    m = view_mask.to(p_inv.dtype)[..., None, None]
    f_inv = p_inv @ R.transpose(-1, -2)
    one = torch.ones_like(focal_norm)
    zscale = torch.stack([one, one, focal_norm / focal_ref], dim=-1)[:, :, None, :]  # (B, V, 1, 3)
    f_var = (p_var * zscale) @ R.transpose(-1, -2) + (c - anchor[:, None])[:, :, None, :]
    return f_inv * m, f_var * m


def _mlp(d_in: int, hidden: int, d_out: int, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.LayerNorm(d_in)] if norm else []
    layers += [
        nn.Linear(d_in, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, d_out),
    ]
    return nn.Sequential(*layers)


class RegressUV(nn.Module):
    """UV regressor: 1×1 projection, pooling to a ``grid × grid`` map, MLP → (u, v, confidence logit).

    Args:
        d_map: channels D of the backbone feature map.
        grid: pooled grid side.
        hidden: MLP width.
    """

    def __init__(self, d_map: int, grid: int, hidden: int):
        super().__init__()
        self.grid = grid
        self.proj = nn.Conv2d(d_map, 64, 1)
        self.mlp = nn.Sequential(
            nn.Linear(64 * grid * grid, hidden), nn.GELU(), nn.Linear(hidden, NUM_KP * 3)
        )
        with torch.no_grad():  # start at the crop centre
            self.mlp[-1].weight.mul_(0.01)
            self.mlp[-1].bias.zero_()

    def forward(
        self, fmap: torch.Tensor, img_size: int, skips: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(N, D, h, w) feature maps → uv (N, 20, 2) in crop units (u/S), confidence logits (N, 20);
        ``skips`` are ignored; no heatmap (None)."""
        x = nn.functional.adaptive_avg_pool2d(self.proj(fmap), self.grid).flatten(1)
        out = self.mlp(x).reshape(-1, NUM_KP, 3)
        return out[..., :2] + 0.5, out[..., 2], None


def heatmap_cell_centres(n: int, img_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Crop-pixel coordinates ``(n,)`` of the centres of ``n`` heatmap cells along one axis of an S-px crop:
    ``j·s + (s − 1)/2`` with ``s = S / n`` (the ``c = (S − 1)/2`` convention of the crop cameras). The one
    definition shared by :class:`HeatmapUV` and the heatmap loss."""
    s = img_size / n
    return torch.arange(n, device=device, dtype=dtype) * s + (s - 1) / 2


class HeatmapUV(nn.Module):
    """Integral-regression UV head (soft-argmax over heatmaps, spec/model.md §2.2).

    The backbone's last feature map (N, D, h, w) is projected to ``width`` channels and brought to a
    finer grid in 2× steps: with ``skip_chs`` (channels of the backbone's own stride-16 and stride-8
    maps, finest last) each step upsamples bilinearly, adds a 1×1 projection of that map and mixes
    with a 3×3 convolution (a small feature pyramid: the heatmaps see high-resolution evidence); without
    them ``n_up`` stride-2 deconvolutions are used. A 1×1 convolution gives (N, 20, H, W) logits; a
    softmax over each map is a distribution over cells and the 2D keypoint its expectation, cell (i, j)
    centred on crop pixel ``(j·s + (s − 1)/2, i·s + (s − 1)/2)``, s = S / W (the ``c = (S − 1)/2``
    convention of the crop cameras), returned in crop units (divided by S). The confidence logit is a
    learnt affine function, per keypoint, of the log spread (RMS radius, gradient stopped) of the
    distribution, so it calibrates rather than shapes the heatmap.

    Args:
        d_map: channels D of the last feature map.
        skip_chs: channels of the finer backbone maps used as skips, coarse to fine (may be empty).
        n_up: number of 2× deconvolutions when there are no skips.
        width: channels of the head.
    """

    def __init__(self, d_map: int, skip_chs: tuple[int, ...] = (), n_up: int = 2, width: int = 128):
        super().__init__()

        def cbr(c_in: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, width, k, padding=k // 2, bias=False), nn.BatchNorm2d(width), nn.ReLU()]

        self.stem = nn.Sequential(*cbr(d_map, 1))
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in skip_chs)
        self.mixers = nn.ModuleList(nn.Sequential(*cbr(width, 3)) for _ in skip_chs)
        ups: list[nn.Module] = []
        for _ in range(0 if skip_chs else n_up):
            ups += [
                nn.ConvTranspose2d(width, width, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
        self.deconv = nn.Sequential(*ups)
        self.out = nn.Conv2d(width, NUM_KP, 1)
        with torch.no_grad():  # near-uniform heatmaps at the start: the crop centre
            self.out.weight.mul_(0.01)
            self.out.bias.zero_()
        self.conf_scale = nn.Parameter(torch.full((NUM_KP,), -2.0))
        self.conf_bias = nn.Parameter(torch.full((NUM_KP,), -4.0))

    def forward(
        self, fmap: torch.Tensor, img_size: int, skips: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Heatmap soft-argmax.

        Args:
            fmap: (N, D, h, w) last feature map.
            img_size: crop side S, px.
            skips: the finer maps, (N, C_k, h_k, w_k), coarse to fine, matching ``skip_chs``.

        Returns:
            uv (N, 20, 2) in crop units (u/S, v/S), confidence logits (N, 20), heatmap logits
            (N, 20, H, W).
        """
        x = self.stem(fmap)
        for lateral, mixer, skip in zip(self.laterals, self.mixers, skips or [], strict=True):
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = mixer(x + lateral(skip))
        logits = self.out(self.deconv(x)).float()  # (N, 20, H, W)
        n, k, h, w = logits.shape
        prob = torch.softmax(logits.flatten(2), dim=-1).reshape(n, k, h, w)
        S = float(img_size)
        xs = heatmap_cell_centres(w, img_size, logits.device) / S
        ys = heatmap_cell_centres(h, img_size, logits.device) / S
        px, py = prob.sum(2), prob.sum(3)  # marginals (N, 20, W), (N, 20, H)
        u = (px * xs).sum(-1)
        v = (py * ys).sum(-1)
        with torch.no_grad():
            var = (px * (xs - u[..., None]) ** 2).sum(-1) + (py * (ys - v[..., None]) ** 2).sum(-1)
            log_spread = 0.5 * torch.log(var.clamp_min(1e-8))
        # spread ≈ 0.02 (a sharp peak) → logit ≈ +3.8; a flat map (spread ≈ 0.4) → ≈ −2.2
        conf_logits = self.conf_scale * log_spread + self.conf_bias
        return torch.stack([u, v], dim=-1), conf_logits, logits


class HandNet(nn.Module):
    """Multi-view MANO regressor (see the module docstring for the data flow).

    Args:
        backbone: timm model name.
        img_size: crop side S in pixels.
        views: number of view slots V.
        in_chans, n_points, hidden, uv_grid, focal_ref, uv_detach, position_mode, root_depth, uv_head,
            uv_upsample: see :class:`HandNetConfig`.
        mano: right-hand :class:`mvhand.geometry.mano.ManoLayer` (or any module with ``landmarks`` and
            ``root_joint``); without it :attr:`HandNetOutput.landmarks` is None. Its buffers are not
            part of :meth:`net_state_dict`.
        pretrained_file: optional local backbone weights.
    """

    def __init__(
        self,
        backbone: str = "mobilenetv3_small_100",
        img_size: int = 128,
        views: int = 2,
        in_chans: int = 1,
        n_points: int = 64,
        hidden: int = 512,
        uv_grid: int = 4,
        focal_ref: float = 1.0,
        uv_detach: bool = False,
        position_mode: str = "point",
        root_depth: float = 0.5,
        uv_head: str = "heatmap",
        uv_upsample: int = 2,
        mano: nn.Module | None = None,
        pretrained_file: str | os.PathLike | None = None,
    ):
        super().__init__()
        if not 1 <= views <= 8:
            raise ValueError(f"views must be in 1..8, got {views}")
        if uv_head not in ("heatmap", "regress"):
            raise ValueError(f"uv_head must be 'heatmap' or 'regress', got {uv_head!r}")
        if position_mode not in ("point", "mlp"):
            raise ValueError(f"position_mode must be 'point' or 'mlp', got {position_mode!r}")
        self.config = HandNetConfig(
            backbone=backbone,
            img_size=img_size,
            views=views,
            in_chans=in_chans,
            n_points=n_points,
            hidden=hidden,
            uv_grid=uv_grid,
            focal_ref=focal_ref,
            uv_detach=uv_detach,
            position_mode=position_mode,
            root_depth=root_depth,
            uv_head=uv_head,
            uv_upsample=uv_upsample,
        )
        self.backbone = create_backbone(backbone, img_size, in_chans, pretrained_file)
        d_map, d_vec, self._skip_idx, skip_chs = self._probe_dims()
        if uv_head == "heatmap":
            self.uv_net: nn.Module = HeatmapUV(d_map, tuple(skip_chs), uv_upsample)
        else:
            self.uv_net = RegressUV(d_map, uv_grid, hidden)
        self.lift = _mlp(d_vec + NUM_KP * 2 + 1, hidden, 2 * n_points * 3)
        d_fused = views * n_points * 3
        self.param_head = _mlp(d_fused + views, hidden, 15 + 10 + 6)
        self.pos_head = nn.Sequential(
            nn.Linear(2 * d_fused + views, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, 3),
        )
        with torch.no_grad():  # start near the identity rotation, zero pose/shape, root at the anchor
            self.param_head[-1].weight.mul_(0.01)
            self.param_head[-1].bias.zero_()
            self.pos_head[-1].weight.mul_(0.01)
            self.pos_head[-1].bias.zero_()
        self.register_buffer("_rot6d_bias", torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), persistent=False)
        self.mano = mano

    @classmethod
    def from_config(
        cls, config: HandNetConfig | dict, mano: nn.Module | None = None, pretrained_file: str | None = None
    ) -> HandNet:
        """Rebuild from a :class:`HandNetConfig` (or its dict), optionally with local backbone weights."""
        cfg = config if isinstance(config, HandNetConfig) else HandNetConfig.from_dict(config)
        return cls(**cfg.to_dict(), mano=mano, pretrained_file=pretrained_file or None)

    def _probe_dims(self) -> tuple[int, int, list[int], list[int]]:
        """Channels of the last feature map and of the pooled vector; indices and channels of the
        backbone's intermediate maps at 2× and 4× the last map's resolution (the heatmap head's skips;
        empty where the backbone has no ``forward_intermediates``)."""
        was_training = self.backbone.training
        self.backbone.eval()
        skip_idx: list[int] = []
        skip_chs: list[int] = []
        with torch.no_grad():
            x = torch.zeros(1, self.config.in_chans, self.config.img_size, self.config.img_size)
            feats = self.backbone.forward_features(x)
            vec = self.backbone.forward_head(feats, pre_logits=True)
            fmap = self._feature_map(feats)
            inter = self._intermediates(x) if self.config.uv_head == "heatmap" else None
            if inter is not None:
                sizes = [t.shape[-1] if t.ndim == 4 else -1 for t in inter]
                for factor in (2, 4):  # coarse to fine
                    want = fmap.shape[-1] * factor
                    if want in sizes:
                        skip_idx.append(sizes.index(want))
                        skip_chs.append(int(inter[skip_idx[-1]].shape[1]))
                if len(skip_idx) != 2:
                    skip_idx, skip_chs = [], []
        self.backbone.train(was_training)
        return fmap.shape[1], vec.shape[-1], skip_idx, skip_chs

    def _intermediates(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """The backbone's intermediate NCHW maps (timm ``forward_intermediates``), or None."""
        fn = getattr(self.backbone, "forward_intermediates", None)
        if fn is None:
            return None
        try:
            return list(fn(x, intermediates_only=True))
        except (TypeError, NotImplementedError, RuntimeError, AssertionError):
            return None

    def _backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final backbone features (as ``forward_features``) and the heatmap head's skip maps."""
        if not self._skip_idx:
            return self.backbone.forward_features(x), []
        feats, inter = self.backbone.forward_intermediates(x, intermediates_only=False)
        return feats, [inter[i] for i in self._skip_idx]

    def _feature_map(self, feats: torch.Tensor) -> torch.Tensor:
        """Backbone features as an NCHW map (token sequences are reshaped to their square grid)."""
        if feats.ndim == 4:
            return feats
        if feats.ndim != 3:
            raise ValueError(f"unsupported backbone feature shape {tuple(feats.shape)}")
        tokens = feats[:, int(getattr(self.backbone, "num_prefix_tokens", 0) or 0) :]
        n = tokens.shape[1]
        g = int(round(math.sqrt(n)))
        if g * g != n:  # not a square grid: pool the sequence
            return tokens.mean(1)[:, :, None, None]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], g, g)

    def net_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict without the MANO layer's buffers (what checkpoints store)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("mano.")}

    def load_net_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`net_state_dict` output strictly (MANO buffers excepted).

        Raises:
            ValueError: the state dict belongs to another architecture (missing, unexpected or
                differently shaped parameters).
        """
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ValueError(f"state dict does not match the model: {exc}") from exc
        missing = [k for k in missing if not k.startswith("mano.")]
        if missing or unexpected:
            raise ValueError(
                f"state dict does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )

    def forward(
        self,
        images: torch.Tensor,
        view_mask: torch.Tensor,
        K: torch.Tensor,
        T_world_from_crop: torch.Tensor,
        anchor: torch.Tensor | None = None,
    ) -> HandNetOutput:
        """Predict one right hand per sample from V crops.

        Args:
            images: (B, V, C, S, S) uint8 grey levels or float in [0, 1].
            view_mask: (B, V) 1/True for valid view slots (≥ 1 per sample); invalid slots do not
                influence any output.
            K: (B, V, 4) ``fx, fy, cx, cy`` of each S×S crop camera, pixels.
            T_world_from_crop: (B, V, 4, 4) crop camera poses, world, m.
            anchor: (B, 3) per-sample anchor, m; default :func:`masked_anchor` of the camera centres.

        Returns:
            :class:`HandNetOutput`.
        """
        cfg = self.config
        B, V, C, S, _ = images.shape
        if V != cfg.views or C != cfg.in_chans or S != cfg.img_size:
            raise ValueError(
                f"images {tuple(images.shape)} do not match the model (views={cfg.views}, "
                f"in_chans={cfg.in_chans}, img_size={cfg.img_size})"
            )
        mask = view_mask.to(torch.bool)
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        x = ((x - IMAGE_MEAN) / IMAGE_STD) * mask[..., None, None, None]
        x = x.reshape(B * V, C, S, S)
        feats, skips = self._backbone(x)
        f2d = self.backbone.forward_head(feats, pre_logits=True)
        uv_norm, conf_logits, hm = self.uv_net(self._feature_map(feats), S, skips)
        if hm is not None:
            hm = hm.reshape(B, V, NUM_KP, *hm.shape[-2:])
        uv_norm = uv_norm.float().reshape(B, V, NUM_KP, 2)
        conf_logits = conf_logits.float().reshape(B, V, NUM_KP)

        K = K.float()
        T = T_world_from_crop.float()
        focal_norm = K[..., 0] / S  # (B, V)
        uv_in = uv_norm.detach() if cfg.uv_detach else uv_norm
        lift_in = torch.cat(
            [
                f2d.float().reshape(B, V, -1),
                uv_in.reshape(B, V, -1),
                torch.log(focal_norm / cfg.focal_ref)[..., None],
            ],
            dim=-1,
        )
        pts = self.lift(lift_in).float().reshape(B, V, 2, cfg.n_points, 3)
        depth = torch.zeros(2, cfg.n_points, 3, device=pts.device)
        depth[1, 0, 2] = cfg.root_depth  # the first variant point is the per-view root estimate
        pts = pts + depth
        if anchor is None:
            anchor = masked_anchor(T[..., :3, 3], mask)
        anchor = anchor.float()
        f_inv, f_var = split_ftl(pts[:, :, 0], pts[:, :, 1], T, focal_norm, anchor, mask, cfg.focal_ref)
        mf = mask.float()
        x_inv = torch.cat([f_inv.reshape(B, -1), mf], dim=-1)
        x_pos = torch.cat([f_var.reshape(B, -1), f_inv.reshape(B, -1), mf], dim=-1)
        params = self.param_head(x_inv).float()
        pose_pca, betas, d6 = params[:, :15], params[:, 15:25], params[:, 25:31] + self._rot6d_bias
        global_rot = rotation_6d_to_matrix(d6)
        root_rel = self.pos_head(x_pos).float()
        if cfg.position_mode == "point":
            root_rel = root_rel + (f_var[:, :, 0] * mf[..., None]).sum(1) / mf.sum(1, keepdim=True).clamp_min(
                1.0
            )
        landmarks = None
        if self.mano is not None:
            with torch.autocast(device_type=images.device.type, enabled=False):
                transl = root_rel - self.mano.root_joint(betas)
                landmarks = self.mano.landmarks(pose_pca, global_rot, transl, betas) + anchor[:, None]
        return HandNetOutput(
            uv=uv_norm * S,
            uv_norm=uv_norm,
            conf=torch.sigmoid(conf_logits),
            conf_logits=conf_logits,
            pose_pca=pose_pca,
            betas=betas,
            global_rot=global_rot,
            root_rel=root_rel,
            root=root_rel + anchor,
            anchor=anchor,
            landmarks=landmarks,
            feat_inv=f_inv,
            feat_var=f_var,
            uv_heatmap_logits=hm,
        )
