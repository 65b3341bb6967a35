"""Literal copies of the spec/formats.md §2.7 examples (toy hand model, cameras, hands, crops) and spec/formats.md §6.5 GT.

Shared test data: other test modules may import these dicts. Never modify them in place (deep-copy first).
"""

from __future__ import annotations

SEQUENCE_NAME = "subject_000_separate_hand_000000"

CAMERAS_JSON = {
    "1201-0": {
        "T_world_from_camera": {
            "quaternion_wxyz": [1.0, 0.0, 0.0, 0.0],
            "translation_xyz": [-0.03, 0.0, 0.0],
        },
        "calibration": {
            "T_device_from_camera": {
                "quaternion_wxyz": [1.0, 0.0, 0.0, 0.0],
                "translation_xyz": [0.0, 0.0, 0.0],
            },
            "image_height": 480,
            "image_width": 640,
            "label": "camera-0",
            "max_solid_angle": 1.85,
            "projection_model_type": "OculusVisionFishEye62",
            "projection_params": [
                240.0,
                240.0,
                319.5,
                239.5,
                -0.02,
                0.08,
                -0.045,
                0.003,
                0.0009,
                -0.0016,
                0.0,
                0.0,
            ],
            "serial_number": "00000001:mono10bit",
            "stream_id": "1201-0",
        },
    },
    "1201-1": {
        "T_world_from_camera": {"quaternion_wxyz": [1.0, 0.0, 0.0, 0.0], "translation_xyz": [0.03, 0.0, 0.0]},
        "calibration": {
            "T_device_from_camera": {
                "quaternion_wxyz": [1.0, 0.0, 0.0, 0.0],
                "translation_xyz": [0.0, 0.0, 0.0],
            },
            "image_height": 480,
            "image_width": 640,
            "label": "camera-1",
            "max_solid_angle": 1.85,
            "projection_model_type": "OculusVisionFishEye62",
            "projection_params": [
                241.0,
                241.0,
                320.5,
                240.5,
                -0.02,
                0.08,
                -0.045,
                0.003,
                0.0009,
                -0.0016,
                0.0,
                0.0,
            ],
            "serial_number": "00000002:mono10bit",
            "stream_id": "1201-1",
        },
    },
}

HOT3D_RGB_CAMERAS_JSON = {
    "214-1": {
        "T_world_from_camera": {
            "quaternion_wxyz": [0.5, -0.5, 0.5, -0.5],
            "translation_xyz": [0.12, 1.45, -0.31],
        },
        "calibration": {
            "T_device_from_camera": {
                "quaternion_wxyz": [0.942596, 0.330911, 0.020055, 0.04011],
                "translation_xyz": [-0.004, -0.012, -0.005],
            },
            "image_height": 1408,
            "image_width": 1408,
            "label": "camera-rgb",
            "max_solid_angle": 1.75,
            "projection_model_type": "CameraModelType.FISHEYE624",
            "projection_params": [
                610.0,
                703.5,
                703.5,
                0.39,
                -0.38,
                -0.11,
                1.08,
                -1.35,
                0.51,
                0.0006,
                -0.0003,
                -0.0004,
                7e-05,
                0.0003,
                -2e-05,
            ],
            "serial_number": "rgb-0001",
            "stream_id": "214-1",
        },
    }
}

HANDS_JSON = {
    "left": {
        "umetrack_pose": {
            "T_world_from_wrist": {
                "quaternion_wxyz": [0.533446, -0.54858, 0.533446, -0.360459],
                "translation_xyz": [-0.05, 0.08, 0.35],
            },
            "joint_angles": [
                0.0,
                0.0,
                0.3,
                0.2,
                0.0,
                0.4,
                0.5,
                0.3,
                0.0,
                0.4,
                0.5,
                0.3,
                0.0,
                0.5,
                0.6,
                0.3,
                0.0,
                0.6,
                0.7,
                0.4,
                0.0,
                0.0,
            ],
        },
        "mano_pose": {
            "thetas": [
                0.41,
                -0.12,
                0.88,
                0.05,
                -0.33,
                0.27,
                0.1,
                -0.06,
                0.15,
                0.02,
                -0.09,
                0.04,
                0.01,
                -0.02,
                0.03,
            ],
            "wrist_xform": [-1.52, 0.21, 1.07, -0.061, 0.075, 0.352],
        },
    }
}

HAND_CROPS_JSON = {
    "left": {
        "1201-0": {
            "T_world_from_crop_camera": {
                "quaternion_wxyz": [0.999754, 0.001081, 0.02217, 0.0],
                "translation_xyz": [-0.03, 0.0, 0.0],
            },
            "crop_camera_fov": 0.478367,
        },
        "1201-1": {
            "T_world_from_crop_camera": {
                "quaternion_wxyz": [0.998313, 0.001076, -0.058056, 0.0],
                "translation_xyz": [0.03, 0.0, 0.0],
            },
            "crop_camera_fov": 0.46788,
        },
    },
    "right": {},
}

HAND_SHAPES_JSON = {
    "mano": [0.52, -1.1, 0.35, 0.08, -0.61, 0.24, -0.02, 0.47, -0.33, 0.15],
    "umetrack": {
        "joint_rotation_axes": [
            [0.8, 0.6, 0.0],
            [-0.6, 0.0, 0.8],
            [0.6, 0.8, 0.0],
            [0.6, 0.8, 0.0],
            [0.0, -1.0, 0.0],
            [0.0, 0.0, -1.0],
            [0.0, 0.0, -1.0],
            [0.0, 0.0, -1.0],
            [0.0, -1.0, 0.0],
            [0.0, 0.0, -1.0],
            [0.0, 0.0, -1.0],
            [0.0, 0.0, -1.0],
            [0.0, -1.0, 0.0],
            [0.0, 0.0, -1.0],
            [0.0, 0.0, -1.0],
            [0.0, 0.0, -1.0],
            [0.0, -1.0, 0.0],
            [0.0, 0.0, -1.0],
            [0.0, 0.0, -1.0],
            [0.0, 0.0, -1.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
        ],
        "joint_rest_positions": [
            [20.0, -10.0, 10.0],
            [35.0, -20.0, 28.0],
            [60.0, -35.0, 45.0],
            [83.0, -44.0, 66.0],
            [95.0, -5.0, 22.0],
            [95.0, -5.0, 22.0],
            [133.0, -9.0, 21.0],
            [158.0, -11.0, 20.0],
            [96.0, -2.0, 2.0],
            [96.0, -2.0, 2.0],
            [138.0, -6.0, -2.0],
            [165.0, -8.0, -5.0],
            [89.0, -6.0, -17.0],
            [89.0, -6.0, -17.0],
            [126.0, -10.0, -26.0],
            [152.0, -13.0, -33.0],
            [78.0, -13.0, -35.0],
            [78.0, -13.0, -35.0],
            [107.0, -17.0, -42.0],
            [126.0, -20.0, -48.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
        ],
        "joint_frame_index": [
            255.0,
            2.0,
            3.0,
            4.0,
            255.0,
            5.0,
            6.0,
            7.0,
            255.0,
            8.0,
            9.0,
            10.0,
            255.0,
            11.0,
            12.0,
            13.0,
            255.0,
            14.0,
            15.0,
            16.0,
            255.0,
            0.0,
        ],
        "joint_parent": [
            255.0,
            0.0,
            1.0,
            2.0,
            255.0,
            4.0,
            5.0,
            6.0,
            255.0,
            8.0,
            9.0,
            10.0,
            255.0,
            12.0,
            13.0,
            14.0,
            255.0,
            16.0,
            17.0,
            18.0,
            255.0,
            20.0,
        ],
        "joint_first_child": [
            1.0,
            2.0,
            3.0,
            255.0,
            5.0,
            6.0,
            7.0,
            255.0,
            9.0,
            10.0,
            11.0,
            255.0,
            13.0,
            14.0,
            15.0,
            255.0,
            17.0,
            18.0,
            19.0,
            255.0,
            21.0,
            255.0,
        ],
        "joint_next_sibling": [
            4.0,
            255.0,
            255.0,
            255.0,
            8.0,
            255.0,
            255.0,
            255.0,
            12.0,
            255.0,
            255.0,
            255.0,
            16.0,
            255.0,
            255.0,
            255.0,
            20.0,
            255.0,
            255.0,
            255.0,
            255.0,
            255.0,
        ],
        "landmark_rest_positions": [
            [100.0, -50.0, 84.0],
            [178.0, -12.0, 19.0],
            [188.0, -9.0, -7.0],
            [173.0, -15.0, -38.0],
            [145.0, -22.0, -53.0],
            [0.0, 0.0, 0.0],
            [60.0, -35.0, 45.0],
            [83.0, -44.0, 66.0],
            [95.0, -5.0, 22.0],
            [133.0, -9.0, 21.0],
            [158.0, -11.0, 20.0],
            [96.0, -2.0, 2.0],
            [138.0, -6.0, -2.0],
            [165.0, -8.0, -5.0],
            [89.0, -6.0, -17.0],
            [126.0, -10.0, -26.0],
            [152.0, -13.0, -33.0],
            [78.0, -13.0, -35.0],
            [107.0, -17.0, -42.0],
            [126.0, -20.0, -48.0],
            [80.0, -20.0, 0.0],
        ],
        "landmark_rest_bone_weights": [
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.9, 0.07, 0.03],
        ],
        "landmark_rest_bone_indices": [
            [4, 4, 4],
            [7, 7, 7],
            [10, 10, 10],
            [13, 13, 13],
            [16, 16, 16],
            [1, 1, 1],
            [2, 2, 2],
            [3, 3, 3],
            [1, 1, 1],
            [5, 5, 5],
            [6, 6, 6],
            [1, 1, 1],
            [8, 8, 8],
            [9, 9, 9],
            [1, 1, 1],
            [11, 11, 11],
            [12, 12, 12],
            [1, 1, 1],
            [14, 14, 14],
            [15, 15, 15],
            [1, 8, 5],
        ],
        "hand_scale": 1.0,
        "mesh_vertices": [[0.0, 0.0, 0.0], [90.0, 0.0, 25.0], [90.0, 0.0, -35.0]],
        "mesh_triangles": [[0.0, 1.0, 2.0]],
        "dense_bone_weights": [
            [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ],
        "joint_limits": [
            [-0.8, 1.3],
            [-0.6, 0.6],
            [0.0, 1.3],
            [-0.25, 1.1],
            [-0.3, 0.3],
            [-0.3, 1.5],
            [0.0, 1.9],
            [0.0, 1.4],
            [-0.3, 0.3],
            [-0.3, 1.5],
            [0.0, 1.9],
            [0.0, 1.4],
            [-0.3, 0.3],
            [-0.3, 1.5],
            [0.0, 1.9],
            [0.0, 1.4],
            [-0.3, 0.3],
            [-0.3, 1.5],
            [0.0, 1.9],
            [0.0, 1.4],
            [-0.8, 0.8],
            [-0.8, 0.8],
        ],
    },
}

# spec/formats.md §6.5: canonical (20) GT landmarks of the left hand of the spec/formats.md §2.7 example, metres, world frame.
GT_LANDMARKS_LEFT = [
    [0.043396, -0.020756, 0.375081],
    [0.006469, -0.069187, 0.382327],
    [-0.016825, -0.081612, 0.388387],
    [-0.049763, -0.064037, 0.404497],
    [-0.070338, -0.034865, 0.410392],
    [-0.05, 0.08, 0.35],
    [0.010693, 0.026002, 0.36583],
    [0.030323, 0.000649, 0.370615],
    [-0.011529, -0.008411, 0.33459],
    [-0.003065, -0.043601, 0.346879],
    [0.00254, -0.060234, 0.364822],
    [-0.031252, -0.01298, 0.334927],
    [-0.02474, -0.052561, 0.3486],
    [-0.020537, -0.071017, 0.368189],
    [-0.049974, -0.010558, 0.343272],
    [-0.049166, -0.044934, 0.360114],
    [-0.049435, -0.058575, 0.383519],
    [-0.067813, -0.00447, 0.355049],
    [-0.06691, -0.029618, 0.371564],
    [-0.068487, -0.03559, 0.390744],
]


# --------------------------------------------------------------------------------------------------
# Toy sequence tars built from the examples above (shared by several test modules)
# --------------------------------------------------------------------------------------------------

import copy  # noqa: E402
from pathlib import Path  # noqa: E402


def _jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, "JPEG")
    return buf.getvalue()


def _hand(dx: float, mano: bool = True) -> dict:
    h = copy.deepcopy(HANDS_JSON["left"])
    t = h["umetrack_pose"]["T_world_from_wrist"]["translation_xyz"]
    t[0] += dx
    if mano:
        h["mano_pose"]["wrist_xform"][3] += dx
    else:
        del h["mano_pose"]
    return h


def write_toy_tar(
    path: Path, frame_ids, right_every: int = 2, shapes: bool = True, hands: bool = True, no_mano=(2,)
) -> Path:
    """Toy sequence: left hand in every frame except frame 3 (no crops at all), right hand every
    ``right_every``-th frame; ``no_mano`` frames lack the left hand's mano_pose (GT pose = zeros)."""
    from mvhand.dataset import SequenceWriter

    img = _jpeg()
    crops_left = HAND_CROPS_JSON["left"]
    with SequenceWriter(path) as w:
        if shapes:
            w.write_hand_shapes(HAND_SHAPES_JSON["mano"], HAND_SHAPES_JSON["umetrack"])
        for k, fid in enumerate(frame_ids):
            crops, hj = {}, {}
            if fid != 3:
                crops["left"] = crops_left
                hj["left"] = _hand(0.002 * k, mano=fid not in no_mano)
            if k % right_every == right_every - 1:
                crops["right"] = crops_left
                hj["right"] = _hand(0.1 + 0.001 * k)
            w.write_frame(fid, CAMERAS_JSON, crops, hj if hands else None, {s: img for s in CAMERAS_JSON})
    return path
