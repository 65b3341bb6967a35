"""Tests of mvhand.formats.sequence: streaming tar reader, deterministic writer, round trips, bad input."""

from __future__ import annotations

import copy
import gc
import gzip
import io
import json
import re
import tarfile
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest
from fixtures import (
    CAMERAS_JSON,
    HAND_CROPS_JSON,
    HAND_SHAPES_JSON,
    HANDS_JSON,
    HOT3D_RGB_CAMERAS_JSON,
    STREAMS,
    jpeg_image,
    mono_images,
    right_hand,
    write_raw_tar,
    write_umetrack_sequence,
)
from PIL import Image

from mvhand.formats.sequence import (
    HAND_SHAPES_MEMBER,
    SequenceWriter,
    frame_to_json,
    iter_frames,
    list_sequences,
    read_hand_shapes,
    sequence_name,
)
from mvhand.geometry.transforms import se3_from_json
from mvhand.geometry.umetrack import UmeTrackHandModel
from mvhand.io_utils import InputError


def _frame_members(key: str = "000000", **override: bytes | None) -> list[tuple[str, bytes]]:
    members = {
        "cameras.json": json.dumps(CAMERAS_JSON).encode(),
        "hand_crops.json": json.dumps(HAND_CROPS_JSON).encode(),
        "hands.json": json.dumps(HANDS_JSON).encode(),
        **{f"image_{sid}.jpg": data for sid, data in mono_images().items()},
    }
    members.update(override)
    return [(f"{key}.{suffix}", data) for suffix, data in members.items() if data is not None]


# ---------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------


def test_round_trip_umetrack_sequence(tmp_path):
    tar = write_umetrack_sequence(tmp_path / "subject_000_separate_hand_000000.tar")
    frames = list(iter_frames(tar))
    assert [f.frame_id for f in frames] == [0, 1, 2]
    f0, f1, f2 = frames
    assert f0.sequence_name == "subject_000_separate_hand_000000"
    assert list(f0.cameras) == list(STREAMS)
    assert f0.cameras["1201-1"].fx == 241.0 and not f0.cameras["1201-0"].is_rgb
    np.testing.assert_array_equal(
        f0.cameras["1201-0"].T_world_from_eye, se3_from_json(CAMERAS_JSON["1201-0"]["T_world_from_camera"])
    )
    # hands
    assert list(f0.hands) == ["left"] and list(f1.hands) == ["left", "right"] and f2.hands == {}
    left = f0.hands["left"]
    pose = HANDS_JSON["left"]["umetrack_pose"]
    np.testing.assert_array_equal(left.T_world_from_wrist, se3_from_json(pose["T_world_from_wrist"]))
    assert left.joint_angles.dtype == np.float32 and left.joint_angles.shape == (22,)
    np.testing.assert_array_equal(left.joint_angles, np.float32(pose["joint_angles"]))
    np.testing.assert_allclose(left.mano_thetas, HANDS_JSON["left"]["mano_pose"]["thetas"], rtol=1e-6)
    np.testing.assert_allclose(
        left.mano_wrist_xform, HANDS_JSON["left"]["mano_pose"]["wrist_xform"], rtol=1e-6
    )
    right = f1.hands["right"]
    assert right.joint_angles.shape == (22,) and right.joint_angles[20:].tolist() == [0.0, 0.0]
    assert right.mano_thetas is None and right.mano_wrist_xform is None
    # crops: "right": {} means no crop for that hand
    assert list(f0.hand_crops) == ["left"] and list(f0.hand_crops["left"]) == list(STREAMS)
    c = f0.hand_crops["left"]["1201-0"]
    assert c.fov == 0.478367
    np.testing.assert_array_equal(
        c.T_world_from_crop_camera,
        se3_from_json(HAND_CROPS_JSON["left"]["1201-0"]["T_world_from_crop_camera"]),
    )
    assert list(f1.hand_crops) == ["left", "right"] and f2.hand_crops == {}
    # images: bytes verbatim, decoded as mono with Pillow
    assert f1.image_bytes == mono_images(1)
    img = f1.image("1201-1")
    expected = np.array(Image.open(io.BytesIO(mono_images(1)["1201-1"])).convert("L"))
    assert img.shape == (480, 640) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, expected)
    # shapes
    shapes = read_hand_shapes(tar)
    np.testing.assert_array_equal(shapes.mano_betas, np.float32(HAND_SHAPES_JSON["mano"]))
    assert shapes.umetrack.equals(UmeTrackHandModel.from_json(HAND_SHAPES_JSON["umetrack"]))
    assert shapes.raw == HAND_SHAPES_JSON


def _rewrite(src: Path, dst: Path) -> Path:
    shapes = read_hand_shapes(src)
    with SequenceWriter(dst) as w:
        if shapes is not None:
            w.write_hand_shapes(shapes.raw["mano"], shapes.raw["umetrack"])
        for frame in iter_frames(src):
            w.write(frame)
    return dst


def test_read_write_read_write_is_byte_identical(tmp_path):
    tar0 = write_umetrack_sequence(tmp_path / "seq.tar")
    tar1 = _rewrite(tar0, tmp_path / "a" / "seq.tar")
    tar2 = _rewrite(tar1, tmp_path / "b" / "seq.tar")
    assert tar1.read_bytes() == tar2.read_bytes()
    # Original transform JSON values survive (no quaternion re-derivation).
    with tarfile.open(tar1) as tf:
        hands = json.loads(tf.extractfile("000000.hands.json").read())
        crops = json.loads(tf.extractfile("000000.hand_crops.json").read())
        cams = json.loads(tf.extractfile("000000.cameras.json").read())
    assert (
        hands["left"]["umetrack_pose"]["T_world_from_wrist"]
        == HANDS_JSON["left"]["umetrack_pose"]["T_world_from_wrist"]
    )
    assert crops["left"]["1201-1"] == HAND_CROPS_JSON["left"]["1201-1"]
    assert cams["1201-0"]["T_world_from_camera"] == CAMERAS_JSON["1201-0"]["T_world_from_camera"]
    assert len(hands["left"]["umetrack_pose"]["joint_angles"]) == 22
    # frame_to_json of a re-read frame equals the JSON written
    f0 = next(iter_frames(tar1))
    js = frame_to_json(f0)
    assert set(js) == {"cameras.json", "hand_crops.json", "hands.json"}
    assert js["hands.json"] == hands


def test_modified_pose_is_serialised_from_the_matrix(tmp_path):
    tar = write_umetrack_sequence(tmp_path / "seq.tar")
    f0 = next(iter_frames(tar))
    T = f0.hands["left"].T_world_from_wrist.copy()
    T[:3, 3] += np.float32(0.01)
    f0.hands["left"].T_world_from_wrist = T
    js = frame_to_json(f0)["hands.json"]["left"]["umetrack_pose"]["T_world_from_wrist"]
    np.testing.assert_allclose(se3_from_json(js), T, atol=1e-6)


def test_writer_layout_and_determinism(tmp_path):
    a = write_umetrack_sequence(tmp_path / "a.tar")
    b = write_umetrack_sequence(tmp_path / "b.tar")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tf:
        infos = tf.getmembers()
    names = [i.name for i in infos]
    assert names[0] == HAND_SHAPES_MEMBER and names.count(HAND_SHAPES_MEMBER) == 1
    frames = [n for n in names[1:]]
    assert frames[:5] == [
        "000000.cameras.json",
        "000000.hand_crops.json",
        "000000.hands.json",
        "000000.image_1201-0.jpg",
        "000000.image_1201-1.jpg",
    ]
    keys = [n.split(".")[0] for n in frames]
    assert keys == sorted(keys) and all(re.fullmatch(r"\d{6}", k) for k in keys)
    for k in set(keys):  # sorted names within each frame
        group = [n for n in frames if n.startswith(k + ".")]
        assert group == sorted(group)
    for i in infos:
        assert (i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) == (0, 0, 0, "", "", 0o644) and i.isreg()
    with tarfile.open(a) as tf:  # compact, sorted-key JSON
        raw = tf.extractfile("000000.hand_crops.json").read().decode()
    assert raw == json.dumps(HAND_CROPS_JSON, sort_keys=True, separators=(",", ":"))


def test_hot3d_style_sequence(tmp_path):
    cameras = {"214-1": HOT3D_RGB_CAMERAS_JSON["214-1"], "1201-1": CAMERAS_JSON["1201-1"]}
    images = {"214-1": jpeg_image(1408, 1408, rgb=True), "1201-1": jpeg_image(480, 640)}
    info = {
        "device": "Aria",
        "image_timestamps_ns": {"214-1": 1000, "1201-1": 1001},
        "participant_id": "P0001",
        "ref_timestamp_ns": 1000,
        "sequence_id": "abc",
    }
    objects = {
        "1": [
            {
                "object_bop_id": 1,
                "object_name": "mug",
                "T_world_from_object": {"quaternion_wxyz": [1, 0, 0, 0], "translation_xyz": [0, 0, 1]},
            }
        ]
    }
    hands = {
        "right": {
            **right_hand(),
            "boxes_amodal": {"214-1": [10.0, 20.0, 300.0, 400.0]},
            "visibilities_modeled": {"214-1": 0.8, "1201-1": 0.05},
        }
    }
    crops = {"right": {"214-1": HAND_CROPS_JSON["left"]["1201-0"]}}
    tar = tmp_path / "clip-001234.tar"
    with SequenceWriter(tar) as w:
        w.write_hand_shapes(
            np.float32(HAND_SHAPES_JSON["mano"]), UmeTrackHandModel.from_json(HAND_SHAPES_JSON["umetrack"])
        )
        for fid in range(2):
            w.write_frame(fid, cameras, crops, hands, images, info=info, objects=objects)
    frames = list(iter_frames(tar))
    assert len(frames) == 2 and frames[0].sequence_name == "clip-001234"
    f = frames[1]
    assert f.info == info and f.objects == objects
    assert f.cameras["214-1"].is_rgb and f.cameras["214-1"].single_focal
    rgb = f.image("214-1")
    assert rgb.shape == (1408, 1408, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.array(Image.open(io.BytesIO(images["214-1"])).convert("RGB")))
    assert f.image("1201-1").shape == (480, 640)
    assert f.hands["right"].boxes_amodal == {"214-1": [10.0, 20.0, 300.0, 400.0]}
    assert f.hands["right"].visibilities == {"214-1": 0.8, "1201-1": 0.05}
    js = frame_to_json(f)
    assert js["info.json"] == info and js["objects.json"] == objects
    assert js["hands.json"]["right"]["visibilities_modeled"] == {"214-1": 0.8, "1201-1": 0.05}
    np.testing.assert_array_equal(read_hand_shapes(tar).mano_betas, np.float32(HAND_SHAPES_JSON["mano"]))


def test_stripped_test_split_tars(tmp_path):
    shape_test = write_umetrack_sequence(tmp_path / "shape.tar", hands=False, shapes=False)
    pose_test = write_umetrack_sequence(tmp_path / "pose.tar", hands=False, shapes=True)
    assert read_hand_shapes(shape_test) is None
    assert read_hand_shapes(pose_test) is not None
    for tar in (shape_test, pose_test):
        with tarfile.open(tar) as tf:
            assert not any(n.endswith("hands.json") for n in tf.getnames())
        frames = list(iter_frames(tar, images=False))
        assert [f.frame_id for f in frames] == [0, 1, 2]
        assert all(f.hands == {} for f in frames)
        assert list(frames[1].hand_crops) == ["left", "right"]  # crops define evaluated hands
        assert "hands.json" not in frame_to_json(frames[0])


def test_images_false_and_stream_selection(tmp_path):
    tar = write_umetrack_sequence(tmp_path / "seq.tar")
    f = next(iter_frames(tar, images=False))
    assert f.image_bytes == {} and list(f.cameras) == list(STREAMS)
    with pytest.raises(InputError, match="not loaded"):
        f.image("1201-0")
    f = next(iter_frames(tar, streams=["1201-1"]))
    assert list(f.image_bytes) == ["1201-1"] and list(f.cameras) == list(STREAMS)
    assert f.image("1201-1").shape == (480, 640)
    with pytest.raises(InputError, match="requested streams"):
        next(iter_frames(tar, streams=["9999-9"]))


def test_streaming_holds_one_frame(tmp_path):
    n_frames = 60
    big = jpeg_image(480, 640, seed=5, noise=True)  # incompressible, ~300 kB
    tar = tmp_path / "long.tar"
    with SequenceWriter(tar) as w:
        for fid in range(n_frames):
            w.write_frame(fid, CAMERAS_JSON, {}, None, {sid: big for sid in STREAMS})
    frame_bytes = 2 * len(big)
    assert tar.stat().st_size > n_frames * frame_bytes
    refs = []
    tracemalloc.start()
    try:
        for f in iter_frames(tar):
            assert len(f.image_bytes) == 2
            refs.append(weakref.ref(f))
            del f
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    gc.collect()
    assert len(refs) == n_frames
    assert sum(r() is not None for r in refs) == 0  # the reader keeps no frame alive
    assert peak < 4 * frame_bytes, (peak, frame_bytes)  # vs. ~60 frames if the tar were slurped


def _webdataset_samples(tar: Path) -> list[dict]:
    """Independent transcription of webdataset's tar_file_iterator + group_by_keys rules (spec/formats.md §1.2)."""
    samples: list[dict] = []
    current = None
    with tarfile.open(tar) as tf:
        for info in tf:
            if not info.isreg():
                continue
            fname = info.name
            if "/" not in fname and fname.startswith("__") and fname.endswith("__"):
                continue
            if re.match(r"__[^/]*__($|/)", fname):
                continue
            m = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", fname)
            if not m:
                continue
            prefix, suffix = m.group(1), m.group(2).lower()
            if current is None or prefix != current["__key__"]:
                if current:
                    samples.append(current)
                current = {"__key__": prefix}
            if suffix in current:
                raise ValueError(f"{fname}: duplicate file name in tar file")
            current[suffix] = tf.extractfile(info).read()
    if current:
        samples.append(current)
    return samples


def test_webdataset_grouping_compatibility(tmp_path):
    tar = write_umetrack_sequence(tmp_path / "seq.tar")
    samples = _webdataset_samples(tar)
    frames = list(iter_frames(tar))
    assert [int(s["__key__"]) for s in samples] == [f.frame_id for f in frames]
    for s, f in zip(samples, frames, strict=True):
        assert {k for k in s if k.startswith("image_")} == {f"image_{sid}.jpg" for sid in f.cameras}
        assert {"cameras.json", "hand_crops.json", "hands.json"} <= set(s)
        assert all(s[f"image_{sid}.jpg"] == f.image_bytes[sid] for sid in f.cameras)
    # upper-case suffixes are lower-cased by both readers
    members = [(n.replace("cameras.json", "CAMERAS.JSON"), d) for n, d in _frame_members()]
    upper = write_raw_tar(tmp_path / "upper.tar", [("__hand_shapes.json__", b"{}"), *members])
    assert "cameras.json" in _webdataset_samples(upper)[0]
    assert list(next(iter_frames(upper)).cameras) == list(STREAMS)


# ---------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("images", [True, False])  # stream mode and seekable mode
def test_truncated_tar_raises(tmp_path, images):
    tar = write_umetrack_sequence(tmp_path / "seq.tar")
    data = tar.read_bytes()
    # cut inside a member's data
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.tar.*truncated or corrupt"):
        list(iter_frames(cut, images=images))
    # cut exactly at a member boundary (end-of-archive blocks missing): frames would look complete
    with tarfile.open(tar) as tf:
        last = tf.getmembers()[-1]
    boundary = last.offset_data + ((last.size + 511) // 512) * 512
    clean_cut = tmp_path / "boundary.tar"
    clean_cut.write_bytes(data[:boundary])
    with pytest.raises(InputError, match="truncated or corrupt"):
        list(iter_frames(clean_cut, images=images))
    # garbage after a member
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(data[:boundary] + b"x" * 1024)
    with pytest.raises(InputError, match="truncated or corrupt"):
        list(iter_frames(garbage, images=images))
    # header-only cut also detected by read_hand_shapes when the member is absent
    nohs = write_umetrack_sequence(tmp_path / "nohs.tar", shapes=False)
    nohs_cut = tmp_path / "nohs_cut.tar"
    nohs_cut.write_bytes(nohs.read_bytes()[:1536])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_hand_shapes(nohs_cut)


def test_compressed_archives_read_like_plain_ones(tmp_path):
    """A gzip-compressed sequence reads like the plain one (same tarfile path), truncation still detected."""
    plain = write_umetrack_sequence(tmp_path / "seq.tar")
    gz = tmp_path / "seq.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    for images in (True, False):
        a, b = list(iter_frames(plain, images=images)), list(iter_frames(gz, images=images))
        assert [f.frame_id for f in a] == [f.frame_id for f in b] and len(a) > 1
        assert all(
            x.image_bytes == y.image_bytes and x.cameras.keys() == y.cameras.keys() for x, y in zip(a, b)
        )
        assert all(f.image_bytes for f in a) == images
    assert read_hand_shapes(gz) is not None
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.tar.gz.*truncated or corrupt"):
        list(iter_frames(cut))


def test_corrupt_header_after_the_first_member_raises(tmp_path):
    """A damaged header in the middle of the archive (tarfile would silently stop there) is an error."""
    tar = write_umetrack_sequence(tmp_path / "seq.tar")
    data = bytearray(tar.read_bytes())
    with tarfile.open(tar) as tf:
        second = tf.getmembers()[3].offset  # a header well inside the archive
    data[second + 10] ^= 0x55  # a byte of the member name: the header checksum no longer matches
    bad = tmp_path / "bad_header.tar"
    bad.write_bytes(bytes(data))
    for images in (True, False):
        with pytest.raises(InputError, match="bad_header.tar.*truncated or corrupt"):
            list(iter_frames(bad, images=images))


@pytest.mark.parametrize("content", [b"", b"not a tar at all" * 100])
def test_unreadable_file_raises(tmp_path, content):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(content)
    with pytest.raises(InputError, match="bad.tar"):
        list(iter_frames(bad))
    with pytest.raises(InputError, match="bad.tar"):
        read_hand_shapes(bad)


def test_missing_tar_and_split_dir(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list(iter_frames(tmp_path / "nope.tar"))
    with pytest.raises(InputError, match="does not exist"):
        list_sequences(tmp_path / "nodir")


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"cameras.json": None}, "no 000000.cameras.json"),
        ({"hand_crops.json": None}, "no 000000.hand_crops.json"),
        ({"image_1201-1.jpg": None}, "stream '1201-1'.*no member 000000.image_1201-1.jpg"),
        ({"hands.json": b"{not json"}, "member 000000.hands.json is not valid JSON"),
        ({"cameras.json": b"[1, 2"}, "member 000000.cameras.json is not valid JSON"),
        ({"hands.json": json.dumps({"Left": HANDS_JSON["left"]}).encode()}, "unknown hand keys"),
        ({"hand_crops.json": b'{"left": {"1201-0": {"crop_camera_fov": 0.5}}}'}, "hand_crops.json"),
    ],
)
def test_bad_frame_members(tmp_path, override, pattern):
    tar = write_raw_tar(tmp_path / "bad.tar", _frame_members(**override))
    with pytest.raises(InputError, match=f"bad.tar.*{pattern}"):
        list(iter_frames(tar))


@pytest.mark.parametrize("where", ["joint_angles", "translation", "thetas"])
def test_nan_in_poses_raises(tmp_path, where):
    hands = copy.deepcopy(HANDS_JSON)
    if where == "joint_angles":
        hands["left"]["umetrack_pose"]["joint_angles"][4] = float("nan")
    elif where == "translation":
        hands["left"]["umetrack_pose"]["T_world_from_wrist"]["translation_xyz"][0] = float("nan")
    else:
        hands["left"]["mano_pose"]["thetas"][0] = float("nan")
    tar = write_raw_tar(tmp_path / "nan.tar", _frame_members(**{"hands.json": json.dumps(hands).encode()}))
    assert b"NaN" in tar.read_bytes()
    with pytest.raises(InputError, match="nan.tar.*000000.hands.json.*(NaN|non-finite)"):
        list(iter_frames(tar))


def test_grouping_errors(tmp_path):
    f0, f1 = _frame_members("000000"), _frame_members("000001")
    split = write_raw_tar(tmp_path / "split.tar", [*f0, *f1, ("000000.extra.json", b"{}")])
    with pytest.raises(InputError, match="frame 000000 appears in two separate groups"):
        list(iter_frames(split))
    same_id = write_raw_tar(tmp_path / "same_id.tar", [*f0, *_frame_members("0")])
    with pytest.raises(InputError, match="two separate groups"):
        list(iter_frames(same_id))
    dup = write_raw_tar(tmp_path / "dup.tar", [*f0, ("000000.Cameras.json", f0[0][1])])
    with pytest.raises(InputError, match="repeated suffix 'cameras.json'"):
        list(iter_frames(dup))
    with pytest.raises(ValueError, match="duplicate"):  # webdataset rejects it too
        _webdataset_samples(dup)
    notint = write_raw_tar(tmp_path / "notint.tar", _frame_members("frame_a"))
    with pytest.raises(InputError, match="key 'frame_a' is not an integer"):
        list(iter_frames(notint))
    subdir = write_raw_tar(tmp_path / "subdir.tar", _frame_members("seq/000000"))
    with pytest.raises(InputError, match="not an integer"):
        list(iter_frames(subdir))
    two_shapes = write_raw_tar(
        tmp_path / "two.tar", [(HAND_SHAPES_MEMBER, b"{}"), *f0, (HAND_SHAPES_MEMBER, b"{}")]
    )
    with pytest.raises(InputError, match="occurs twice"):
        list(iter_frames(two_shapes))


def test_metadata_and_unknown_members_are_skipped(tmp_path):
    members = [("__hand_shapes.json__", b"not even json"), ("README", b"x"), *_frame_members()]
    members.append(("000000.depth.png", b"ignored"))
    tar = write_raw_tar(tmp_path / "meta.tar", members)
    frames = list(iter_frames(tar))
    assert [f.frame_id for f in frames] == [0]
    with pytest.raises(InputError, match="meta.tar.*__hand_shapes.json__ is not valid JSON"):
        read_hand_shapes(tar)


def test_hand_shapes_validation(tmp_path):
    bad = copy.deepcopy(HAND_SHAPES_JSON)
    bad["umetrack"]["hand_model"] = {}
    tar = write_raw_tar(
        tmp_path / "hs.tar", [(HAND_SHAPES_MEMBER, json.dumps(bad).encode()), *_frame_members()]
    )
    with pytest.raises(InputError, match="hs.tar.*unknown keys \\['hand_model'\\]"):
        read_hand_shapes(tar)
    bad = copy.deepcopy(HAND_SHAPES_JSON)
    bad["mano"] = bad["mano"][:9]
    tar = write_raw_tar(
        tmp_path / "hs2.tar", [(HAND_SHAPES_MEMBER, json.dumps(bad).encode()), *_frame_members()]
    )
    with pytest.raises(InputError, match="hs2.tar.*mano betas must have 10"):
        read_hand_shapes(tar)


def test_mano_pose_without_umetrack_pose_is_ignored(tmp_path):
    hands = {"left": HANDS_JSON["left"], "right": {"mano_pose": HANDS_JSON["left"]["mano_pose"]}}
    tar = write_raw_tar(tmp_path / "quirk.tar", _frame_members(**{"hands.json": json.dumps(hands).encode()}))
    f = next(iter_frames(tar))
    assert list(f.hands) == ["left"]


def test_image_decoding_errors(tmp_path):
    tar = write_raw_tar(
        tmp_path / "img.tar",
        _frame_members(**{"image_1201-0.jpg": b"\xff\xd8garbage", "image_1201-1.jpg": jpeg_image(240, 320)}),
    )
    f = next(iter_frames(tar))
    with pytest.raises(InputError, match="img.tar.*cannot decode JPEG"):
        f.image("1201-0")
    with pytest.raises(InputError, match="320x240 but the calibration says 640x480"):
        f.image("1201-1")


# ---------------------------------------------------------------------------------------------------
# Writer errors, atomicity, listing
# ---------------------------------------------------------------------------------------------------


def test_writer_rejects_bad_frames(tmp_path):
    path = tmp_path / "w.tar"
    with SequenceWriter(path) as w:
        w.write_frame(3, CAMERAS_JSON, {}, None, mono_images())
        with pytest.raises(ValueError, match="ascending"):
            w.write_frame(3, CAMERAS_JSON, {}, None, mono_images())
        with pytest.raises(ValueError, match="before the first frame"):
            w.write_hand_shapes(HAND_SHAPES_JSON["mano"], HAND_SHAPES_JSON["umetrack"])
        with pytest.raises(ValueError, match="must match the camera streams"):
            w.write_frame(4, CAMERAS_JSON, {}, None, {"1201-0": b"x"})
        nan_hands = copy.deepcopy(HANDS_JSON)
        nan_hands["left"]["umetrack_pose"]["joint_angles"][0] = float("nan")
        with pytest.raises(ValueError, match="hands.json"):
            w.write_frame(4, CAMERAS_JSON, {}, nan_hands, mono_images())
        bad_cams = copy.deepcopy(CAMERAS_JSON)
        del bad_cams["1201-0"]["calibration"]["serial_number"]
        with pytest.raises(ValueError, match="would not be readable"):
            w.write_frame(4, bad_cams, {}, None, mono_images())
        bad_id = {"1201.0": CAMERAS_JSON["1201-0"]}
        with pytest.raises(ValueError, match="stream id"):
            w.write_frame(4, bad_id, {}, None, {"1201.0": b"x"})
        w.write_frame(7, CAMERAS_JSON, {}, None, mono_images())
    assert [f.frame_id for f in iter_frames(path)] == [3, 7]


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "out" / "seq.tar"
    with pytest.raises(RuntimeError, match="boom"), SequenceWriter(path) as w:
        w.write_frame(0, CAMERAS_JSON, {}, None, mono_images())
        raise RuntimeError("boom")
    assert not path.exists() and list(path.parent.iterdir()) == []
    w = SequenceWriter(path)
    w.write_frame(0, CAMERAS_JSON, {}, None, mono_images())
    w.abort()
    assert list(path.parent.iterdir()) == []
    w = SequenceWriter(path)
    w.write_hand_shapes(HAND_SHAPES_JSON["mano"], HAND_SHAPES_JSON["umetrack"])
    with pytest.raises(ValueError, match="already written"):
        w.write_hand_shapes(HAND_SHAPES_JSON["mano"], HAND_SHAPES_JSON["umetrack"])
    assert not path.exists()
    w.close()
    assert list(path.parent.iterdir()) == [path] and read_hand_shapes(path) is not None
    with pytest.raises(ValueError, match="closed"):
        w.write_frame(0, CAMERAS_JSON, {}, None, mono_images())


def test_list_sequences_and_names(tmp_path):
    for name in ("b_seq.tar", "a_seq.tar", "c.notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.tar").mkdir()
    assert [p.name for p in list_sequences(tmp_path)] == ["a_seq.tar", "b_seq.tar"]
    assert sequence_name("/x/subject_000_separate_hand_000000.tar") == "subject_000_separate_hand_000000"
    assert sequence_name("clip-001234.tar.gz") == "clip-001234"
