"""Tests of mvhand.formats.crop_cache: the Parquet crop cache against independent computations and known answers."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from fixtures import (
    GT_LANDMARKS_LEFT,
    HAND_CROPS_JSON,
    HAND_SHAPES_JSON,
    HANDS_JSON,
    RGB_STREAM,
    STREAMS,
    write_crop_sequence,
)

from mvhand.formats.crop_cache import (
    CROP_SCHEMA,
    CropSettings,
    cache_sequence_crops,
    crop_render_geometry,
    decode_crop_jpeg,
    project_to_crop,
)
from mvhand.formats.sequence import iter_frames
from mvhand.geometry.cameras import crop_camera, warp_image_reference
from mvhand.geometry.transforms import se3_from_json
from mvhand.io_utils import InputError

REPO = Path(__file__).resolve().parents[1]


def read_table(path: Path):
    return pq.read_table(path)


@pytest.fixture(scope="module")
def train_cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("crops")
    tar = write_crop_sequence(d / "subject_000_separate_hand_000000.tar", n_frames=3)
    out = d / "out.parquet"
    settings = CropSettings(crop_size=64, fov_margin=1.25, jpeg_quality=95)
    stats = cache_sequence_crops(tar, out, settings, threads=2, progress=False, row_group_size=4)
    return tar, out, settings, stats


def test_schema_rows_and_order(train_cache):
    tar, out, settings, stats = train_cache
    table = read_table(out)
    assert table.schema.equals(CROP_SCHEMA, check_metadata=False)
    assert stats.n_frames == 3 and stats.n_rows == table.num_rows == 3 * 2  # 3 frames x left hand x 2 views
    df = table.to_pandas()
    assert list(df.sequence_name.unique()) == ["subject_000_separate_hand_000000"]
    assert list(zip(df.frame_id, df.hand_side, df.view_index, strict=True)) == [
        (f, 0, v) for f in range(3) for v in range(2)
    ]
    assert list(df.stream_id) == list(STREAMS) * 3
    assert (df.crop_size == round(1.25 * 64)).all()
    md = pq.ParquetFile(out).metadata
    assert md.num_row_groups == 2  # row groups of 4 rows
    comp = {
        md.row_group(0).column(i).path_in_schema: md.row_group(0).column(i).compression
        for i in range(md.num_columns)
    }
    assert comp["image_jpeg"] == "UNCOMPRESSED" and comp["frame_id"] == "ZSTD"


def test_crops_match_independent_warp(train_cache):
    """Re-build every crop camera from hand_crops.json and warp with the reference warp (Pillow decode)."""
    tar, out, settings, _ = train_cache
    df = read_table(out).to_pandas()
    frames = {f.frame_id: f for f in iter_frames(tar)}
    for row in df.itertuples():
        frame = frames[row.frame_id]
        params = HAND_CROPS_JSON["left"][row.stream_id]
        fov = params["crop_camera_fov"]
        render_fov = 2 * math.atan(1.25 * math.tan(fov / 2))
        size = round(1.25 * 64)
        T = se3_from_json(params["T_world_from_crop_camera"])
        cam = crop_camera(T, render_fov, size)
        ref = warp_image_reference(frame.image(row.stream_id), frame.cameras[row.stream_id], cam)
        got = decode_crop_jpeg(row.image_jpeg)
        assert got.shape == (size, size)  # mono stays 1-channel
        diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
        assert diff.mean() < 1.5 and diff.max() <= 24, (diff.mean(), diff.max())
        assert ref.std() > 10  # the crop sees texture (a black crop would match trivially)
        np.testing.assert_allclose(row.intrinsics, [cam.fx, cam.fy, cam.cx, cam.cy], rtol=1e-6)
        np.testing.assert_allclose(np.reshape(row.T_world_from_crop, (4, 4)), T, atol=1e-7)
        assert row.fov == pytest.approx(fov, rel=1e-6)
        assert row.render_fov == pytest.approx(render_fov, rel=1e-6)


def test_landmarks_known_answer_and_projection(train_cache):
    """landmarks_world = GT landmarks (spec/formats.md §6.5); landmarks_crop = projection with the stored camera."""
    _, out, _, stats = train_cache
    df = read_table(out).to_pandas()
    assert stats.n_with_targets == len(df)
    for row in df.itertuples():
        lw = np.reshape(row.landmarks_world, (20, 3))
        np.testing.assert_allclose(lw, GT_LANDMARKS_LEFT, atol=2e-5)
        fx, fy, cx, cy = row.intrinsics
        T = np.reshape(row.T_world_from_crop, (4, 4)).astype(np.float64)
        v = (lw - T[:3, 3]) @ T[:3, :3]  # R^T (p - t)
        uv = np.stack([fx * v[:, 0] / v[:, 2] + cx, fy * v[:, 1] / v[:, 2] + cy], -1)
        np.testing.assert_allclose(np.reshape(row.landmarks_crop, (20, 2)), uv, atol=1e-3)
        s = row.crop_size
        inside = (v[:, 2] > 0) & (uv >= -0.5).all(1) & (uv <= s - 0.5).all(1)
        assert row.n_visible == inside.sum() == 20  # the toy crop frames the whole hand
        np.testing.assert_allclose(row.mano_beta, HAND_SHAPES_JSON["mano"], atol=1e-6)
        np.testing.assert_allclose(row.mano_theta, HANDS_JSON["left"]["mano_pose"]["thetas"], atol=1e-6)
        np.testing.assert_allclose(
            row.mano_wrist_xform, HANDS_JSON["left"]["mano_pose"]["wrist_xform"], atol=1e-6
        )


def test_fov_margin_relation(tmp_path):
    """tan(render_fov/2) = m tan(fov/2), side round(m S), and the centre S x S of the margin crop is the
    crop rendered without margin (same focal length and image centre)."""
    fov = 0.478367
    render_fov, size = crop_render_geometry(fov, 64, 1.25)
    assert math.tan(render_fov / 2) == pytest.approx(1.25 * math.tan(fov / 2), rel=1e-12)
    assert size == 80
    assert crop_render_geometry(fov, 64, 1.0) == (pytest.approx(fov), 64)
    tar = write_crop_sequence(tmp_path / "seq.tar", n_frames=1)
    a, b = tmp_path / "m125.parquet", tmp_path / "m100.parquet"
    cache_sequence_crops(tar, a, CropSettings(64, 1.25, 100), progress=False)
    cache_sequence_crops(tar, b, CropSettings(64, 1.0, 100), progress=False)
    ra, rb = read_table(a).to_pandas().iloc[0], read_table(b).to_pandas().iloc[0]
    assert ra.intrinsics[0] == pytest.approx(rb.intrinsics[0], rel=1e-9)  # same focal in px
    assert ra.intrinsics[2] - rb.intrinsics[2] == pytest.approx(8.0)  # centre shifted by (80-64)/2
    big, small = decode_crop_jpeg(ra.image_jpeg), decode_crop_jpeg(rb.image_jpeg)
    diff = np.abs(big[8:72, 8:72].astype(np.int16) - small.astype(np.int16))
    assert diff.mean() < 1.0 and diff.max() <= 12
    # landmarks move by the same offset
    np.testing.assert_allclose(
        np.reshape(ra.landmarks_crop, (20, 2)) - 8.0, np.reshape(rb.landmarks_crop, (20, 2)), atol=1e-3
    )


def test_project_to_crop_counts_visibility():
    cam = crop_camera(np.eye(4), math.radians(60), 10)
    pts = np.array([[0, 0, 1.0], [0, 0, -1.0], [10.0, 0, 1.0], [0.5 * math.tan(math.radians(30)), 0, 0.5]])
    uv, n = project_to_crop(pts, cam)
    assert n == 2  # centre and (almost) the border column; behind and far outside are not counted
    np.testing.assert_allclose(uv[0], [4.5, 4.5])
    assert uv[3, 0] == pytest.approx(4.5 + 5.0, abs=1e-4)  # f = 5/tan(30deg): the fov edge lands at c + S/2


def test_workers_and_chunking_give_identical_tables(tmp_path):
    """Worker processes, in-flight limit, chunk size and row-group size change nothing in the data."""
    tar = write_crop_sequence(tmp_path / "seq.tar", n_frames=5, rgb=True)
    one, many, odd = tmp_path / "t1.parquet", tmp_path / "t3.parquet", tmp_path / "odd.parquet"
    cache_sequence_crops(tar, one, CropSettings(48), threads=1, progress=False)
    cache_sequence_crops(tar, many, CropSettings(48), threads=3, progress=False, max_in_flight=2)
    cache_sequence_crops(
        tar, odd, CropSettings(48), threads=2, progress=False, frames_per_chunk=3, row_group_size=5
    )
    reference = read_table(one)
    assert reference.num_rows == 15
    assert reference.equals(read_table(many)) and reference.equals(read_table(odd))
    meta = pq.ParquetFile(odd).metadata
    # ≤ 5 rows per row group, cut at frame boundaries (3 crops per frame: one frame per group)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3, 3, 3, 3, 3]
    big = tmp_path / "big.parquet"
    cache_sequence_crops(tar, big, CropSettings(48), threads=1, progress=False, row_group_size=7)
    meta = pq.ParquetFile(big).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [6, 6, 3]
    assert read_table(big).equals(reference)


def test_worker_error_names_the_file_and_leaves_nothing(tmp_path):
    """An undecodable image found by a worker process fails the sequence with the file and frame named."""
    tar = write_crop_sequence(tmp_path / "seq.tar", n_frames=6)
    data = tar.read_bytes()
    start = data.index(b"\xff\xd8\xff", data.index(b"000004.image_1201-0.jpg"))
    broken = tmp_path / "broken.tar"
    broken.write_bytes(data[:start] + b"\x00" * 64 + data[start + 64 :])  # same size: tar stays valid
    out = tmp_path / "out" / "broken.parquet"
    with pytest.raises(InputError, match=r"broken\.tar: frame 000004, stream '1201-0': cannot decode JPEG"):
        cache_sequence_crops(broken, out, CropSettings(32), threads=2, progress=False, frames_per_chunk=1)
    assert list(out.parent.iterdir()) == []  # no partial Parquet, no temporary file


def test_rgb_crops_keep_three_channels_and_colours(tmp_path):
    tar = write_crop_sequence(tmp_path / "seq.tar", n_frames=1, rgb=True)
    out = tmp_path / "rgb.parquet"
    cache_sequence_crops(tar, out, CropSettings(48, 1.25, 95), progress=False)
    df = read_table(out).to_pandas()
    row = df[df.stream_id == RGB_STREAM].iloc[0]
    crop = decode_crop_jpeg(row.image_jpeg)
    assert crop.ndim == 3 and crop.shape == (60, 60, 3)
    frame = next(iter_frames(tar))
    params = HAND_CROPS_JSON["left"]["1201-0"]
    cam = crop_camera(se3_from_json(params["T_world_from_crop_camera"]), row.render_fov, 60)
    ref = warp_image_reference(frame.image(RGB_STREAM), frame.cameras[RGB_STREAM], cam)  # RGB order
    diff = np.abs(crop.astype(np.int16) - ref.astype(np.int16))
    assert diff.mean() < 2.5, diff.mean()
    assert abs(float(crop[..., 2].mean()) - 40) < 6  # blue channel constant 40: channels not swapped
    mono = df[df.stream_id == "1201-0"].iloc[0]
    assert cv2.imdecode(np.frombuffer(mono.image_jpeg, np.uint8), cv2.IMREAD_UNCHANGED).ndim == 2


@pytest.mark.parametrize(("hands", "shapes"), [(False, True), (False, False)])
def test_test_splits_have_no_targets(tmp_path, hands, shapes):
    tar = write_crop_sequence(tmp_path / "seq.tar", n_frames=2, hands=hands, shapes=shapes)
    out = tmp_path / "test.parquet"
    stats = cache_sequence_crops(tar, out, CropSettings(32), progress=False)
    df = read_table(out).to_pandas()
    assert len(df) == 4 and stats.n_with_targets == 0
    assert df.landmarks_world.isna().all() and df.landmarks_crop.isna().all() and df.mano_theta.isna().all()
    assert (df.n_visible == -1).all()
    if shapes:  # pose-test tars keep __hand_shapes.json__
        np.testing.assert_allclose(df.mano_beta.iloc[0], HAND_SHAPES_JSON["mano"], atol=1e-6)
    else:
        assert df.mano_beta.isna().all()


def test_sequence_without_hands_gives_empty_file(tmp_path, caplog):
    tar = write_crop_sequence(tmp_path / "seq.tar", n_frames=2, crops=False)
    out = tmp_path / "empty.parquet"
    with caplog.at_level(logging.WARNING, logger="mvhand.formats.crop_cache"):
        stats = cache_sequence_crops(tar, out, progress=False)
    assert stats.n_rows == 0 and stats.n_frames == 2
    table = read_table(out)
    assert table.num_rows == 0 and table.schema.equals(CROP_SCHEMA, check_metadata=False)
    assert "no hand crop" in caplog.text


# Bad input files and settings of the stage (missing, not a tar, truncated, broken JPEG, ...): test_bad_inputs.py


def test_bad_settings():
    for kwargs in ({"crop_size": 2}, {"fov_margin": 0.5}, {"jpeg_quality": 0}):
        with pytest.raises(ValueError):
            CropSettings(**kwargs)
    with pytest.raises(ValueError, match="fov"):
        crop_render_geometry(4.0, 64, 1.25)


def test_stage_script(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    try:
        import cache_crops as script
    finally:
        sys.path.pop(0)
    tar = write_crop_sequence(tmp_path / "seq.tar", n_frames=1)
    out = tmp_path / "seq.parquet"
    args = [
        "--input",
        str(tar),
        "--output",
        str(out),
        "--crop-size",
        "32",
        "--fov-margin",
        "1.5",
        "--jpeg-quality",
        "90",
        "--threads",
        "2",
        "--dataset",
        "umetrack",
        "--no-progress",
    ]
    assert script.main(args) == 0
    df = read_table(out).to_pandas()
    assert len(df) == 2 and (df.crop_size == 48).all()
