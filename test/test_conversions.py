"""Tests of threed_llm_ros.ros.conversions on real sensor_msgs messages.

Messages that feed the decoders are built byte by byte by this file (numpy structured
dtypes, struct), never by the code under test, so a symmetric encode/decode bug cannot
hide. Real recordings (PCL Kinect frames, an Ouster OS1 rosbag2) are checked too.
"""

from __future__ import annotations

import array
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from threed_llm_ros.errors import CameraInfoError, ImageEncodingError, MessageFormatError, PointCloudFormatError
from threed_llm_ros.geometry.camera import CameraIntrinsics, project_points
from threed_llm_ros.ros.conversions import (
    IMAGE_ENCODINGS,
    RGB_LAYOUTS,
    CloudArrays,
    array_to_image,
    arrays_to_pointcloud2,
    camera_info_to_intrinsics,
    depth_image_to_metres,
    depth_metres_to_image,
    depth_to_pointcloud2,
    image_to_array,
    image_to_rgb,
    intrinsics_to_camera_info,
    pointcloud2_to_arrays,
    stamp_to_tuple,
    tuple_to_stamp,
)
from threed_llm_ros.ros.conversions.messages import _message_bytes

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Test-owned table of PointField codes (independent of the module's own table).
CODE_OF_TYPE = {"i1": 1, "u1": 2, "i2": 3, "u2": 4, "i4": 5, "u4": 6, "f4": 7, "f8": 8}


# --------------------------------------------------------------------------- test-side encoders


def build_cloud(
    columns: list[tuple[str, str, int, int, np.ndarray]],
    height: int,
    width: int,
    point_step: int,
    *,
    big_endian: bool = False,
    row_padding: int = 0,
    is_dense: bool = False,
    frame_id: str = "sensor",
    stamp: tuple[int, int] = (12, 345),
    seed: int = 0,
) -> PointCloud2:
    """A PointCloud2 whose bytes this test writes itself.

    ``columns`` holds (name, storage type like "f4"/"u4", PointField datatype code, offset,
    values shaped (height, width) or (height, width, count)). Gaps between fields, the end
    of each point and the end of each row are filled with random garbage bytes.
    """
    order = ">" if big_endian else "<"
    formats = []
    for _, storage, _, _, values in columns:
        count = values.shape[2] if values.ndim == 3 else 1
        formats.append(np.dtype(order + storage) if count == 1 else np.dtype((order + storage, (count,))))
    record_type = np.dtype(
        {
            "names": [name for name, *_ in columns],
            "formats": formats,
            "offsets": [offset for _, _, _, offset, _ in columns],
            "itemsize": point_step,
        }
    )
    rng = np.random.default_rng(seed)
    row_step = width * point_step + row_padding
    raw = np.frombuffer(bytearray(rng.bytes(height * row_step)), dtype=np.uint8).reshape(height, row_step)
    records = raw[:, : width * point_step].copy().view(record_type).reshape(height, width)
    for name, _, _, _, values in columns:
        records[name] = values
    raw[:, : width * point_step] = records.view(np.uint8).reshape(height, width * point_step)
    msg = PointCloud2()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.height, msg.width = height, width
    msg.fields = [
        PointField(name=name, offset=offset, datatype=code, count=values.shape[2] if values.ndim == 3 else 1)
        for name, _, code, offset, values in columns
    ]
    msg.is_bigendian = big_endian
    msg.point_step = point_step
    msg.row_step = row_step
    msg.data = raw.tobytes()
    msg.is_dense = is_dense
    return msg


def pack_rgb(rgb: np.ndarray, alpha: np.ndarray | int = 0) -> np.ndarray:
    """PCL's packed colour 0xAARRGGBB as uint32."""
    rgb = rgb.astype(np.uint32)
    return (np.asarray(alpha, np.uint32) << 24) | (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def build_image(pixels: np.ndarray, encoding: str, *, big_endian: bool = False, row_padding: int = 0) -> Image:
    """An Image whose bytes this test writes itself, rows padded with garbage."""
    height, width = pixels.shape[:2]
    stored = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<"))
    row = stored.reshape(height, -1).view(np.uint8).reshape(height, -1)
    padded = np.full((height, row.shape[1] + row_padding), 0xEE, dtype=np.uint8)
    padded[:, : row.shape[1]] = row
    msg = Image()
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = int(big_endian)
    msg.step = padded.shape[1]
    msg.data = padded.tobytes()
    return msg


def base_cloud() -> PointCloud2:
    """Three by two points: x, y, z, packed float rgb and intensity, all FLOAT32."""
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    columns = [
        ("x", "f4", 7, 0, values),
        ("y", "f4", 7, 4, values + 10),
        ("z", "f4", 7, 8, values + 20),
        ("rgb", "u4", 7, 12, pack_rgb(np.full((2, 3, 3), 9, np.uint8))),
        ("intensity", "f4", 7, 16, values * 2),
    ]
    return build_cloud(columns, 2, 3, 20)


# --------------------------------------------------------------------------- PointCloud2 round trips


@pytest.mark.parametrize("organised", [False, True], ids=["unorganised", "organised"])
@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("xyz_dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("rgb_layout", RGB_LAYOUTS)
def test_pointcloud2_round_trip(rgb_layout, xyz_dtype, big_endian, padding, organised):
    rng = np.random.default_rng(7)
    shape = (4, 5) if organised else (20,)
    xyz = rng.uniform(-50, 50, shape + (3,)).astype(np.float32)
    rgb = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    intensity = rng.uniform(0, 1000, shape).astype(np.float32)
    msg = arrays_to_pointcloud2(
        xyz,
        rgb,
        intensity,
        frame_id="cam",
        stamp=(17, 999_999_999),
        rgb_layout=rgb_layout,
        xyz_dtype=xyz_dtype,
        big_endian=big_endian,
        padding_bytes=padding,
    )
    assert (msg.height, msg.width) == ((4, 5) if organised else (1, 20))
    assert msg.row_step == msg.width * msg.point_step == len(msg.data) // msg.height
    decoded = pointcloud2_to_arrays(msg, organized=organised)
    assert decoded.frame_id == "cam" and decoded.stamp == (17, 999_999_999)
    expected_shape = shape if organised else (20,)
    np.testing.assert_array_equal(decoded.xyz, xyz.reshape(expected_shape + (3,)))
    np.testing.assert_array_equal(decoded.rgb, rgb.reshape(expected_shape + (3,)))
    np.testing.assert_array_equal(decoded.intensity, intensity.reshape(expected_shape))
    assert decoded.xyz.dtype == np.float32 and decoded.rgb.dtype == np.uint8 and decoded.intensity.dtype == np.float32


def test_encoder_writes_pcl_packed_float_rgb_byte_for_byte():
    xyz = np.array([[1.5, -2.25, 3.0], [0.0, 0.5, 7.0]], np.float32)
    rgb = np.array([[255, 128, 1], [3, 2, 1]], np.uint8)
    msg = arrays_to_pointcloud2(xyz, rgb, np.array([42.0, 7.0]), frame_id="f")
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1),
        ("intensity", 16, PointField.FLOAT32, 1),
    ]
    assert msg.point_step == 20 and not msg.is_bigendian and msg.is_dense
    x, y, z, packed, intensity = struct.unpack_from("<fffIf", bytes(msg.data), 0)
    assert (x, y, z, intensity) == (1.5, -2.25, 3.0, 42.0)
    assert packed == 0x00FF8001
    assert struct.unpack_from("<I", bytes(msg.data), 20 + 12)[0] == 0x00030201


def test_encoder_big_endian_rgba_and_separate_channels_byte_for_byte():
    xyz = np.array([[1.0, 2.0, 3.0]])
    rgb = np.array([[10, 20, 30]], np.uint8)
    msg = arrays_to_pointcloud2(xyz, rgb, rgb_layout="rgba_uint32", big_endian=True, xyz_dtype=np.float64)
    assert msg.is_bigendian and msg.point_step == 28
    assert [(f.name, f.offset, f.datatype) for f in msg.fields][-1] == ("rgba", 24, PointField.UINT32)
    assert struct.unpack(">dddI", bytes(msg.data)) == (1.0, 2.0, 3.0, 0xFF0A141E)
    separate = arrays_to_pointcloud2(xyz, rgb, rgb_layout="separate_uint8", padding_bytes=1)
    assert [(f.name, f.offset, f.datatype) for f in separate.fields][3:] == [
        ("r", 12, PointField.UINT8),
        ("g", 13, PointField.UINT8),
        ("b", 14, PointField.UINT8),
    ]
    assert separate.point_step == 16
    assert struct.unpack("<fffBBBx", bytes(separate.data)) == (1.0, 2.0, 3.0, 10, 20, 30)


def test_cloud_without_colour_or_intensity():
    xyz = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    msg = arrays_to_pointcloud2(xyz)
    assert [f.name for f in msg.fields] == ["x", "y", "z"] and msg.point_step == 12
    decoded = pointcloud2_to_arrays(msg)
    assert decoded.rgb is None and decoded.intensity is None and len(decoded) == 2
    np.testing.assert_array_equal(decoded.xyz, xyz)


def test_empty_cloud_round_trip():
    msg = arrays_to_pointcloud2(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0))
    assert (msg.height, msg.width, len(msg.data)) == (1, 0, 0)
    decoded = pointcloud2_to_arrays(msg)
    assert decoded.xyz.shape == (0, 3) and decoded.rgb.shape == (0, 3) and decoded.intensity.shape == (0,)
    organised = pointcloud2_to_arrays(msg, organized=True)
    assert organised.xyz.shape == (1, 0, 3)


# --------------------------------------------------------------------------- invalid points


def cloud_with_invalid_points(is_dense: bool) -> tuple[PointCloud2, np.ndarray, np.ndarray]:
    xyz = np.array(
        [
            [[1, 2, 3], [np.nan, 0, 1], [4, 5, 6]],
            [[0, 0, 0], [7, np.inf, 8], [0, 0, 1]],
            [[9, 9, -np.inf], [1, 1, 1], [2, 2, 2]],
        ],
        dtype=np.float32,
    )
    intensity = np.arange(9, dtype=np.float32).reshape(3, 3)
    columns = [
        ("intensity", "f4", 7, 0, intensity),
        ("x", "f4", 7, 4, xyz[..., 0]),
        ("y", "f4", 7, 8, xyz[..., 1]),
        ("z", "f4", 7, 12, xyz[..., 2]),
    ]
    return build_cloud(columns, 3, 3, 16, is_dense=is_dense), xyz, intensity


@pytest.mark.parametrize("is_dense", [False, True], ids=["honest", "lying-is_dense"])
def test_non_finite_points_are_dropped_with_their_attributes(is_dense):
    msg, xyz, intensity = cloud_with_invalid_points(is_dense)
    decoded = pointcloud2_to_arrays(msg)
    finite = np.isfinite(xyz).all(axis=-1).reshape(-1)
    assert finite.sum() == 6
    np.testing.assert_array_equal(decoded.xyz, xyz.reshape(-1, 3)[finite])
    np.testing.assert_array_equal(decoded.intensity, intensity.reshape(-1)[finite])


def test_float64_values_beyond_float32_are_dropped_as_non_finite_without_a_warning():
    """A FLOAT64 cloud (a fuzzer's, or a driver's garbage) with values no float32 holds: those
    points become infinite and are dropped as NaNs are; numpy's overflow warning is not raised."""
    import warnings

    xyz = np.array([[1.0, 2.0, 3.0], [1e300, 0.0, 1.0], [0.5, -1e39, 2.0], [4.0, 5.0, 6.0]])
    msg = arrays_to_pointcloud2(xyz, xyz_dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(decoded.xyz, np.float32(xyz[[0, 3]]))


def test_keep_invalid_and_organized_keep_every_point():
    msg, xyz, intensity = cloud_with_invalid_points(False)
    kept = pointcloud2_to_arrays(msg, keep_invalid=True)
    np.testing.assert_array_equal(kept.xyz, xyz.reshape(-1, 3))  # NaN == NaN here
    np.testing.assert_array_equal(kept.intensity, intensity.reshape(-1))
    grid = pointcloud2_to_arrays(msg, organized=True)
    assert grid.xyz.shape == (3, 3, 3) and grid.intensity.shape == (3, 3)
    np.testing.assert_array_equal(grid.xyz, xyz)


def test_drop_zeros_removes_only_points_at_the_origin():
    msg, xyz, _ = cloud_with_invalid_points(False)
    default = pointcloud2_to_arrays(msg)
    assert (default.xyz == 0).all(axis=1).sum() == 1  # zeros are kept by default
    no_zeros = pointcloud2_to_arrays(msg, drop_zeros=True)
    assert len(no_zeros) == 5 and not (no_zeros.xyz == 0).all(axis=1).any()
    assert [0.0, 0.0, 1.0] in no_zeros.xyz.tolist()
    kept = pointcloud2_to_arrays(msg, keep_invalid=True, drop_zeros=True)
    assert len(kept) == 8 and np.isnan(kept.xyz).any()
    grid = pointcloud2_to_arrays(msg, organized=True, drop_zeros=True)
    assert np.isnan(grid.xyz[1, 0]).all()
    np.testing.assert_array_equal(grid.xyz[1, 2], [0, 0, 1])


def test_encoder_sets_is_dense_from_the_points_unless_told():
    finite = np.ones((2, 3), np.float32)
    holes = finite.copy()
    holes[1, 2] = np.nan
    assert arrays_to_pointcloud2(finite).is_dense is True
    assert arrays_to_pointcloud2(holes).is_dense is False
    assert arrays_to_pointcloud2(holes, is_dense=True).is_dense is True


# --------------------------------------------------------------------------- property-based layouts


@st.composite
def random_cloud_layouts(draw):
    big_endian = draw(st.booleans())
    xyz_type = draw(st.sampled_from(["f4", "f8"]))
    colour = draw(st.sampled_from([None, "rgb_f4", "rgb_u4", "rgba_u4", "rgb_i4", "separate"]))
    intensity_type = draw(st.sampled_from([None, "f4", "f8", "u1", "u2", "i2", "u4", "i4"]))
    extras = draw(st.lists(st.tuples(st.sampled_from(list(CODE_OF_TYPE)), st.integers(1, 3)), max_size=3))
    entries = [("x", xyz_type, 1), ("y", xyz_type, 1), ("z", xyz_type, 1)]
    if colour == "separate":
        entries += [("r", "u1", 1), ("g", "u1", 1), ("b", "u1", 1)]
    elif colour is not None:
        entries.append(("rgba" if colour == "rgba_u4" else "rgb", "u4", 1))
    if intensity_type is not None:
        entries.append(("intensity", intensity_type, 1))
    entries += [(f"extra{index}", storage, count) for index, (storage, count) in enumerate(extras)]
    entries = draw(st.permutations(entries))
    placed, cursor = [], 0
    for name, storage, count in entries:
        offset = cursor + draw(st.integers(0, 5))
        placed.append((name, storage, count, offset))
        cursor = offset + np.dtype(storage).itemsize * count
    return {
        "big_endian": big_endian,
        "colour": colour,
        "fields": placed,
        "point_step": cursor + draw(st.integers(0, 7)),
        "height": draw(st.integers(1, 4)),
        "width": draw(st.integers(0, 6)),
        "row_padding": draw(st.integers(0, 9)),
        "invalid_fraction": draw(st.sampled_from([0.0, 0.3, 1.0])),
        "seed": draw(st.integers(0, 2**31)),
    }


@FAST
@given(layout=random_cloud_layouts())
def test_decoding_random_layouts_matches_the_source_arrays(layout):
    rng = np.random.default_rng(layout["seed"])
    height, width = layout["height"], layout["width"]
    values: dict[str, np.ndarray] = {}
    columns = []
    colour_code = {"rgb_f4": 7, "rgb_u4": 6, "rgba_u4": 6, "rgb_i4": 5}
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for name, storage, count, offset in layout["fields"]:
        shape = (height, width) if count == 1 else (height, width, count)
        if name in "xyz":
            column = rng.uniform(-1e3, 1e3, shape).astype(storage)
        elif name in ("rgb", "rgba"):
            column = pack_rgb(rgb, rng.integers(0, 256, shape, dtype=np.uint32))
        elif name in ("r", "g", "b"):
            column = rgb[..., "rgb".index(name)]
        else:
            info = np.iinfo(storage) if storage[0] in "iu" else None
            low, high = (info.min, info.max) if info else (-1e6, 1e6)
            column = rng.uniform(low, high, shape).astype(storage) if info is None else rng.integers(
                low, high, shape, dtype=storage, endpoint=True
            )
        code = colour_code[layout["colour"]] if name in ("rgb", "rgba") else CODE_OF_TYPE[storage]
        values[name] = column
        columns.append((name, storage if name not in ("rgb", "rgba") else "u4", code, offset, column))
    invalid = rng.random((height, width)) < layout["invalid_fraction"]
    bad_axis = rng.integers(0, 3, (height, width))
    bad_value = rng.choice([np.nan, np.inf, -np.inf], (height, width))
    for index, axis in enumerate("xyz"):
        values[axis] = np.where(invalid & (bad_axis == index), bad_value, values[axis]).astype(values[axis].dtype)
        columns = [(n, s, c, o, values[axis] if n == axis else v) for n, s, c, o, v in columns]
    msg = build_cloud(
        columns,
        height,
        width,
        layout["point_step"],
        big_endian=layout["big_endian"],
        row_padding=layout["row_padding"],
        is_dense=bool(rng.integers(0, 2)),
        seed=layout["seed"] + 1,
    )
    expected_xyz = np.stack([values[axis] for axis in "xyz"], axis=-1).astype(np.float32)
    keep = ~invalid.reshape(-1)

    grid = pointcloud2_to_arrays(msg, organized=True)
    np.testing.assert_array_equal(grid.xyz, expected_xyz)
    dropped = pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(dropped.xyz, expected_xyz.reshape(-1, 3)[keep])
    assert np.isfinite(dropped.xyz).all()
    if layout["colour"] is None:
        assert dropped.rgb is None
    else:
        np.testing.assert_array_equal(grid.rgb, rgb)
        np.testing.assert_array_equal(dropped.rgb, rgb.reshape(-1, 3)[keep])
    if "intensity" in values:
        np.testing.assert_array_equal(dropped.intensity, values["intensity"].astype(np.float32).reshape(-1)[keep])
    else:
        assert dropped.intensity is None


# --------------------------------------------------------------------------- malformed clouds


def _remove_field(name):
    def mutate(msg):
        msg.fields = [field for field in msg.fields if field.name != name]

    return mutate


def _set_field(name, **changes):
    def mutate(msg):
        for field in msg.fields:
            if field.name == name:
                for key, value in changes.items():
                    setattr(field, key, value)

    return mutate


def _data_length(delta):
    def mutate(msg):
        msg.data = bytes(msg.data) + b"\0" if delta > 0 else bytes(msg.data)[:delta]

    return mutate


def _row_step_too_small(msg):
    msg.row_step = msg.width * msg.point_step - 1
    msg.data = bytes(msg.row_step * msg.height)


def _point_step_zero(msg):
    msg.point_step = msg.row_step = 0
    msg.data = b""


def _duplicate_x(msg):
    msg.fields = list(msg.fields) + [PointField(name="x", offset=4, datatype=7, count=1)]


def _unknown_extra_datatype(msg):
    msg.fields = list(msg.fields) + [PointField(name="ring", offset=2, datatype=0, count=1)]


def _separate_float_red(msg):
    msg.fields = [field for field in msg.fields if field.name != "rgb"] + [
        PointField(name="r", offset=12, datatype=PointField.FLOAT32, count=1),
        PointField(name="g", offset=13, datatype=PointField.UINT8, count=1),
        PointField(name="b", offset=14, datatype=PointField.UINT8, count=1),
    ]


MALFORMED_CLOUDS = [
    ("data-short", _data_length(-1), "data"),
    ("data-long", _data_length(+1), "data"),
    ("row-step-too-small", _row_step_too_small, "row_step"),
    ("point-step-zero", _point_step_zero, "point_step"),
    ("missing-x", _remove_field("x"), "fields"),
    ("missing-z", _remove_field("z"), "fields"),
    ("unknown-datatype-x", _set_field("x", datatype=9), "fields.x.datatype"),
    ("unknown-datatype-extra", _unknown_extra_datatype, "fields.ring.datatype"),
    ("integer-x", _set_field("x", datatype=PointField.INT32), "fields.x.datatype"),
    ("field-past-point-step", _set_field("intensity", offset=17), "fields.intensity.offset"),
    ("count-2-x", _set_field("y", count=2), "fields.y.count"),
    ("rgb-two-bytes", _set_field("rgb", datatype=PointField.UINT16), "fields.rgb.datatype"),
    ("separate-float-red", _separate_float_red, "fields.r.datatype"),
    ("duplicate-x", _duplicate_x, "fields.x"),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [case[1:] for case in MALFORMED_CLOUDS], ids=[case[0] for case in MALFORMED_CLOUDS]
)
def test_malformed_cloud_raises_naming_the_field(mutate, field):
    msg = base_cloud()
    pointcloud2_to_arrays(msg)  # the unmodified message decodes
    mutate(msg)
    with pytest.raises(PointCloudFormatError) as raised:
        pointcloud2_to_arrays(msg)
    assert raised.value.field == field
    assert str(raised.value).startswith(field)


@FAST
@given(data=st.data())
def test_decoder_never_crashes_on_corrupted_headers(data):
    """Random corruptions of a valid cloud either decode consistently or raise PointCloudFormatError."""
    msg = base_cloud()
    msg.fields = list(msg.fields) + [PointField(name="ring", offset=18, datatype=PointField.UINT16, count=1)]
    small = st.integers(0, 40)
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(
            st.sampled_from(["datatype", "offset", "count", "name", "size", "data", "order", "drop", "add"])
        )
        fields = list(msg.fields)
        index = data.draw(st.integers(0, max(0, len(fields) - 1)))
        if target in ("datatype", "offset", "count", "name") and fields:
            value = {
                "datatype": st.integers(0, 10),
                "offset": small,
                "count": st.integers(0, 3),
                "name": st.sampled_from(["x", "y", "z", "rgb", "rgba", "r", "g", "b", "intensity", "t"]),
            }[target]
            setattr(fields[index], target, data.draw(value))
        elif target == "size":
            attribute = data.draw(st.sampled_from(["height", "width", "point_step", "row_step"]))
            setattr(msg, attribute, data.draw(small))
        elif target == "data":
            msg.data = bytes(data.draw(st.integers(0, 200)))
        elif target == "order":
            msg.is_bigendian = not msg.is_bigendian
        elif target == "drop" and fields:
            del fields[index]
        elif target == "add":
            fields.append(
                PointField(
                    name=data.draw(st.sampled_from(["r", "g", "b", "rgba", "t"])),
                    offset=data.draw(small),
                    datatype=data.draw(st.integers(0, 10)),
                    count=data.draw(st.integers(0, 3)),
                )
            )
        msg.fields = fields
    for options in ({}, {"organized": True}, {"keep_invalid": True, "drop_zeros": True}):
        try:
            decoded = pointcloud2_to_arrays(msg, **options)
        except PointCloudFormatError as error:
            event(f"rejected: {error.field}")
            continue
        event("decoded")
        assert isinstance(decoded, CloudArrays) and decoded.xyz.shape[-1] == 3
        assert len(decoded) <= msg.height * msg.width


# --------------------------------------------------------------------------- message data buffers


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x02\xff",
        bytearray(b"\x01\x02\xff"),
        memoryview(b"\x01\x02\xff"),
        array.array("B", [1, 2, 255]),
        np.array([1, 2, 255], np.uint8),
        [1, 2, 255],
    ],
    ids=["bytes", "bytearray", "memoryview", "array.array", "numpy", "list"],
)
def test_message_data_of_every_container_type_is_read(data):
    np.testing.assert_array_equal(_message_bytes(data), [1, 2, 255])


def test_message_data_of_bytes_is_read_without_a_copy():
    raw = bytes(range(16))
    assert np.shares_memory(_message_bytes(raw), np.frombuffer(raw, np.uint8))


@pytest.mark.parametrize("data", [[1, 2, 300], [-1], "abc", None, [[1, 2]], [1.5]])
def test_unreadable_message_data_raises(data):
    with pytest.raises(MessageFormatError) as raised:
        _message_bytes(data, PointCloudFormatError)
    assert isinstance(raised.value, PointCloudFormatError) and raised.value.field == "data"


def test_encoders_store_array_array_that_rclpy_keeps_without_element_checks():
    cloud = arrays_to_pointcloud2(np.ones((4, 3), np.float32))
    image = array_to_image(np.zeros((2, 2), np.uint16), "16UC1")
    for msg in (cloud, image):
        assert isinstance(msg.data, array.array) and msg.data.typecode == "B"


def test_messages_survive_cdr_serialisation():
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(6, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    wire = serialize_message(arrays_to_pointcloud2(xyz, rgb, frame_id="a", stamp=(5, 6)))
    cloud = deserialize_message(wire, PointCloud2)
    decoded = pointcloud2_to_arrays(cloud)
    np.testing.assert_array_equal(decoded.xyz, xyz)
    np.testing.assert_array_equal(decoded.rgb, rgb)
    assert (decoded.frame_id, decoded.stamp) == ("a", (5, 6))
    depth = rng.integers(0, 5000, (3, 4), dtype=np.uint16)
    image = deserialize_message(serialize_message(array_to_image(depth, "16UC1", big_endian=True)), Image)
    np.testing.assert_array_equal(image_to_array(image), depth)
    intrinsics = CameraIntrinsics(500.0, 510.0, 320.5, 240.25, 640, 480, "plumb_bob", (0.1, -0.2, 0.0, 0.0, 0.01))
    info = deserialize_message(serialize_message(intrinsics_to_camera_info(intrinsics)), CameraInfo)
    assert camera_info_to_intrinsics(info) == intrinsics


def test_encoded_messages_pass_rclpy_strict_field_checks():
    """With ROS_PYTHON_CHECK_FIELDS=1 every generated setter asserts its type and range."""
    script = textwrap.dedent(
        """
        import numpy as np
        from sensor_msgs.msg import PointCloud2
        from threed_llm_ros.geometry.camera import CameraIntrinsics
        from threed_llm_ros.ros import conversions as c
        try:
            PointCloud2().height = 1.5
            raise SystemExit("field checks are not active")
        except AssertionError:
            pass
        xyz = np.ones((2, 3, 3), np.float32)
        for layout in c.RGB_LAYOUTS:
            c.arrays_to_pointcloud2(xyz, np.ones((2, 3, 3), np.uint8), np.ones((2, 3)), rgb_layout=layout,
                                    frame_id="f", stamp=(1, 2), big_endian=True, padding_bytes=2)
        for encoding, (kind, channels) in c.IMAGE_ENCODINGS.items():
            shape = (2, 3) if channels == 1 else (2, 3, channels)
            c.array_to_image(np.zeros(shape, np.dtype(kind)), encoding, frame_id="f", stamp=(1, 2))
        c.depth_metres_to_image(np.ones((2, 3)), "32FC1")
        info = c.intrinsics_to_camera_info(CameraIntrinsics(5.0, 5.0, 1.0, 1.0, 3, 2, distortion=(0.1,)))
        depth = c.depth_metres_to_image(np.ones((2, 3)))
        c.depth_to_pointcloud2(depth, info, c.array_to_image(np.zeros((2, 3, 3), np.uint8), "bgr8"))
        print("strict-ok")
        """
    )
    environment = dict(os.environ, ROS_PYTHON_CHECK_FIELDS="1")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0 and "strict-ok" in result.stdout, result.stderr[-2000:]


# --------------------------------------------------------------------------- images


def _random_pixels(encoding: str, shape_hw=(5, 7), seed=0) -> np.ndarray:
    kind, channels = IMAGE_ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = shape_hw if channels == 1 else shape_hw + (channels,)
    if kind == "f4":
        return rng.uniform(0.1, 20, shape).astype(np.float32)
    return rng.integers(0, np.iinfo(kind).max, shape, dtype=kind, endpoint=True)


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
def test_image_round_trip(encoding, big_endian):
    pixels = _random_pixels(encoding)
    msg = array_to_image(pixels, encoding, frame_id="cam", stamp=(3, 4), big_endian=big_endian)
    assert msg.step == pixels.shape[1] * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
    assert (msg.header.frame_id, stamp_to_tuple(msg.header.stamp)) == ("cam", (3, 4))
    decoded = image_to_array(msg)
    assert decoded.dtype == pixels.dtype and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
def test_image_decoding_honours_step_padding_and_byte_order(encoding, big_endian):
    pixels = _random_pixels(encoding, (4, 3), seed=1)
    msg = build_image(pixels, encoding, big_endian=big_endian, row_padding=6)
    np.testing.assert_array_equal(image_to_array(msg), pixels)


def test_big_endian_16_bit_bytes_written_by_hand():
    msg = Image(height=1, width=2, encoding="mono16", is_bigendian=1, step=4, data=bytes([0x01, 0x02, 0xFF, 0x00]))
    np.testing.assert_array_equal(image_to_array(msg), [[0x0102, 0xFF00]])
    msg.is_bigendian = 0
    np.testing.assert_array_equal(image_to_array(msg), [[0x0201, 0x00FF]])


def _expected_rgb(encoding: str, pixels: np.ndarray) -> np.ndarray:
    if encoding in ("rgb8", "rgba8"):
        return pixels[..., :3]
    if encoding in ("bgr8", "bgra8"):
        return np.stack([pixels[..., 2], pixels[..., 1], pixels[..., 0]], axis=-1)
    grey = pixels if encoding != "mono16" else (pixels // 256).astype(np.uint8)
    return np.stack([grey] * 3, axis=-1)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "mono16"])
def test_image_to_rgb(encoding):
    pixels = _random_pixels(encoding, (6, 5), seed=2)
    msg = build_image(pixels, encoding, row_padding=3)
    rgb = image_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 5, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, _expected_rgb(encoding, pixels))


def test_mono16_scaling_end_points():
    msg = build_image(np.array([[0, 255, 256, 65535]], np.uint16), "mono16")
    np.testing.assert_array_equal(image_to_rgb(msg)[0, :, 0], [0, 0, 1, 255])


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_millimetre_depth_to_metres(encoding):
    millimetres = np.array([[0, 1, 1500], [65535, 999, 0]], np.uint16)
    metres = depth_image_to_metres(build_image(millimetres, encoding, big_endian=True, row_padding=2))
    assert metres.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(metres), millimetres == 0)
    np.testing.assert_allclose(metres[millimetres > 0], millimetres[millimetres > 0] / 1000.0, rtol=1e-7)


def test_float_depth_to_metres_marks_zero_nan_inf_negative_missing():
    values = np.array([[1.25, 0.0, np.nan], [np.inf, -np.inf, -2.0]], np.float32)
    metres = depth_image_to_metres(build_image(values, "32FC1"))
    assert metres[0, 0] == np.float32(1.25)
    assert np.isnan(metres.reshape(-1)[1:]).all()


def test_depth_metres_to_image_rounds_clips_and_zeroes_missing():
    depth = np.array([[1.0004, 1.0006, np.nan, -1.0], [70.0, 0.0, np.inf, 0.0004]], np.float32)
    image = depth_metres_to_image(depth, frame_id="d", stamp=(1, 2))
    assert image.encoding == "16UC1" and image.header.frame_id == "d"
    np.testing.assert_array_equal(image_to_array(image), [[1000, 1001, 0, 0], [65535, 0, 0, 0]])
    floats = depth_metres_to_image(depth, "32FC1")
    decoded = image_to_array(floats)
    assert decoded[0, 0] == np.float32(1.0004) and np.isnan(decoded[0, 2]) and np.isnan(decoded[0, 3])


def test_depth_round_trip_is_exact_to_the_millimetre():
    millimetres = np.arange(1, 65536, dtype=np.uint16).reshape(-1, 5)
    metres = depth_image_to_metres(array_to_image(millimetres, "16UC1"))
    np.testing.assert_array_equal(image_to_array(depth_metres_to_image(metres)), millimetres)


def _image_mutation(**changes):
    def mutate(msg):
        for key, value in changes.items():
            setattr(msg, key, value)

    return mutate


MALFORMED_IMAGES = [
    ("unknown-encoding", _image_mutation(encoding="yuv422"), "encoding"),
    ("empty-encoding", _image_mutation(encoding=""), "encoding"),
    ("step-too-small", _image_mutation(step=5), "step"),
    ("data-short", lambda msg: setattr(msg, "data", bytes(msg.data)[:-1]), "data"),
    ("data-long", lambda msg: setattr(msg, "data", bytes(msg.data) + b"\0"), "data"),
    ("step-larger-than-data", _image_mutation(step=7), "data"),
]


@pytest.mark.parametrize("decode", [image_to_array, image_to_rgb])
@pytest.mark.parametrize(("mutate", "field"), [c[1:] for c in MALFORMED_IMAGES], ids=[c[0] for c in MALFORMED_IMAGES])
def test_malformed_image_raises_naming_the_field(mutate, field, decode):
    msg = array_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8")
    decode(msg)
    mutate(msg)
    with pytest.raises(ImageEncodingError) as raised:
        decode(msg)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("function", "msg"),
    [
        (image_to_rgb, array_to_image(np.zeros((2, 2), np.uint16), "16UC1")),
        (image_to_rgb, array_to_image(np.zeros((2, 2), np.float32), "32FC1")),
        (depth_image_to_metres, array_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8")),
        (depth_image_to_metres, array_to_image(np.zeros((2, 2), np.uint8), "mono8")),
    ],
    ids=["rgb-of-16UC1", "rgb-of-32FC1", "depth-of-rgb8", "depth-of-mono8"],
)
def test_wrong_kind_of_image_raises_naming_encoding(function, msg):
    with pytest.raises(ImageEncodingError) as raised:
        function(msg)
    assert raised.value.field == "encoding"


@pytest.mark.parametrize(
    ("pixels", "encoding"),
    [
        (np.zeros((2, 2, 3), np.float32), "rgb8"),
        (np.zeros((2, 2), np.uint8), "16UC1"),
        (np.zeros((2, 2), np.int32), "32FC1"),
        (np.zeros((2, 2), np.uint8), "rgb8"),
        (np.zeros((2, 2, 3), np.uint8), "rgba8"),
        (np.zeros((2, 2, 3), np.uint8), "mono8"),
        (np.zeros((2, 2, 3), np.uint8), "jpeg"),
    ],
    ids=["float-rgb8", "uint8-16UC1", "int-32FC1", "2d-rgb8", "3ch-rgba8", "3ch-mono8", "unknown"],
)
def test_array_to_image_rejects_mismatched_arrays(pixels, encoding):
    with pytest.raises(ImageEncodingError) as raised:
        array_to_image(pixels, encoding)
    assert raised.value.field == "encoding"


@FAST
@given(
    encoding=st.sampled_from(sorted(IMAGE_ENCODINGS) + ["bayer_rggb8", "", "16UC3"]),
    height=st.integers(0, 4),
    width=st.integers(0, 4),
    step=st.integers(0, 20),
    length=st.integers(0, 90),
    big_endian=st.booleans(),
)
def test_image_decoders_never_crash(encoding, height, width, step, length, big_endian):
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=int(big_endian))
    msg.data = bytes(range(256))[:length] if length <= 256 else bytes(length)
    for function in (image_to_array, image_to_rgb, depth_image_to_metres):
        try:
            result = function(msg)
        except ImageEncodingError:
            continue
        assert result.shape[:2] == (height, width)


# --------------------------------------------------------------------------- CameraInfo


def test_camera_info_round_trip_fills_k_p_r_d():
    intrinsics = CameraIntrinsics(525.0, 520.0, 320.0, 239.5, 640, 480, "rational_polynomial", tuple(np.arange(8) / 10))
    info = intrinsics_to_camera_info(intrinsics, frame_id="camera_color_optical_frame", stamp=(9, 8))
    np.testing.assert_array_equal(info.k, [525, 0, 320, 0, 520, 239.5, 0, 0, 1])
    np.testing.assert_array_equal(info.p, [525, 0, 320, 0, 0, 520, 239.5, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(np.asarray(info.r).reshape(3, 3), np.eye(3))
    assert list(info.d) == list(np.arange(8) / 10) and info.distortion_model == "rational_polynomial"
    assert (info.width, info.height, info.header.frame_id) == (640, 480, "camera_color_optical_frame")
    assert camera_info_to_intrinsics(info) == intrinsics


def test_camera_info_binning_and_roi_give_the_published_image_intrinsics():
    info = intrinsics_to_camera_info(CameraIntrinsics(600.0, 600.0, 320.0, 240.0, 640, 480))
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 40, 400, 300
    info.binning_x = info.binning_y = 2
    intrinsics = camera_info_to_intrinsics(info)
    assert (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy) == (300.0, 300.0, 110.0, 100.0)
    assert (intrinsics.width, intrinsics.height) == (200, 150)


def _camera_info_mutation(key, value):
    def mutate(info):
        setattr(info, key, value)

    return mutate


MALFORMED_INFOS = [
    ("k-zero", _camera_info_mutation("k", np.zeros(9)), "k"),
    ("k-nan", _camera_info_mutation("k", np.array([np.nan, 0, 320, 0, 525, 240, 0, 0, 1.0])), "k"),
    ("k-inf", _camera_info_mutation("k", np.array([525, 0, np.inf, 0, 525, 240, 0, 0, 1.0])), "k"),
    ("k-negative-focal", _camera_info_mutation("k", np.array([-525, 0, 320, 0, 525, 240, 0, 0, 1.0])), "k"),
    ("k-eight-values", _camera_info_mutation("k", [525.0, 0, 320, 0, 525, 240, 0, 0]), "k"),
    ("width-zero", _camera_info_mutation("width", 0), "width"),
    ("height-zero", _camera_info_mutation("height", 0), "height"),
]


@pytest.mark.parametrize(("mutate", "field"), [c[1:] for c in MALFORMED_INFOS], ids=[c[0] for c in MALFORMED_INFOS])
def test_malformed_camera_info_raises_naming_the_field(mutate, field):
    info = intrinsics_to_camera_info(CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480))
    camera_info_to_intrinsics(info)
    try:
        mutate(info)
    except AssertionError:  # ROS_PYTHON_CHECK_FIELDS=1 refuses to build this message at all
        pytest.skip("rclpy field checks reject this malformed value")
    with pytest.raises(CameraInfoError) as raised:
        camera_info_to_intrinsics(info)
    assert raised.value.field == field


def test_default_camera_info_is_rejected_as_uncalibrated():
    with pytest.raises(CameraInfoError) as raised:
        camera_info_to_intrinsics(CameraInfo())
    assert raised.value.field == "k"


# --------------------------------------------------------------------------- RGB-D to PointCloud2


def _coordinate_colour_image(height: int, width: int) -> np.ndarray:
    """RGB that encodes each pixel's own (u, v), to check colour-to-point alignment."""
    v, u = np.mgrid[0:height, 0:width]
    return np.stack([u % 256, v % 256, (u // 256) * 16 + v // 256], axis=-1).astype(np.uint8)


def test_depth_to_pointcloud2_plane_header_and_colour_alignment():
    intrinsics = CameraIntrinsics(300.0, 310.0, 159.5, 119.0, 320, 240)
    depth = np.full((240, 320), 1.5, np.float32)
    depth[:40, :] = np.nan
    depth[200:, :] = 9.0
    depth_msg = depth_metres_to_image(depth, frame_id="depth_optical", stamp=(100, 5))
    colour = _coordinate_colour_image(240, 320)
    colour_msg = array_to_image(colour[..., ::-1].copy(), "bgr8", frame_id="color_optical")
    info = intrinsics_to_camera_info(intrinsics)
    cloud_msg = depth_to_pointcloud2(depth_msg, info, colour_msg, max_range=5.0)
    assert cloud_msg.header.frame_id == "depth_optical" and stamp_to_tuple(cloud_msg.header.stamp) == (100, 5)
    cloud = pointcloud2_to_arrays(cloud_msg)
    assert len(cloud) == 160 * 320
    np.testing.assert_array_equal(cloud.xyz[:, 2], 1.5)
    uv, in_front = project_points(cloud.xyz, intrinsics)
    assert in_front.all()
    pixel = np.rint(uv).astype(int)
    np.testing.assert_allclose(uv, pixel, atol=1e-3)
    np.testing.assert_array_equal(cloud.rgb, colour[pixel[:, 1], pixel[:, 0]])


def test_depth_to_pointcloud2_organised_keeps_grid():
    intrinsics = CameraIntrinsics(100.0, 100.0, 10.0, 8.0, 20, 16)
    depth = np.full((16, 20), 2.0, np.float32)
    depth[3, 4] = np.nan
    msg = depth_to_pointcloud2(
        depth_metres_to_image(depth, "32FC1"), intrinsics_to_camera_info(intrinsics), organized=True
    )
    assert (msg.height, msg.width, msg.is_dense) == (16, 20, False)
    grid = pointcloud2_to_arrays(msg, organized=True)
    assert np.isnan(grid.xyz[3, 4]).all() and np.isfinite(grid.xyz).all(axis=-1).sum() == 16 * 20 - 1
    assert grid.rgb is None


def test_depth_and_camera_info_size_mismatch_raises():
    info = intrinsics_to_camera_info(CameraIntrinsics(100.0, 100.0, 10.0, 8.0, 20, 16))
    with pytest.raises(CameraInfoError):
        depth_to_pointcloud2(depth_metres_to_image(np.ones((8, 10))), info)


def test_stamp_helpers():
    assert stamp_to_tuple(tuple_to_stamp((1_700_000_000, 999_999_999))) == (1_700_000_000, 999_999_999)
    for bad in [(0, 1_000_000_000), (2**31, 0), (0, -1), ("x", 0)]:
        with pytest.raises(MessageFormatError) as raised:
            tuple_to_stamp(bad)
        assert raised.value.field == "header.stamp"


# --------------------------------------------------------------------------- real data


GRABBER_FRAME = "frame_20121214T142255.814212"


@pytest.fixture(scope="module")
def kinect_frame(realdata: Path):
    """The PCL grabber frame: RGB and depth TIFFs and the organised PCD of the same frame."""
    open3d = pytest.importorskip("open3d")
    from PIL import Image as PillowImage

    folder = realdata / "pcl" / "grabber_sequences"
    rgb = np.array(PillowImage.open(folder / "tiff" / f"{GRABBER_FRAME}_rgb.tiff").convert("RGB"))
    depth_mm = np.array(PillowImage.open(folder / "tiff" / f"{GRABBER_FRAME}_depth.tiff"))
    cloud = open3d.io.read_point_cloud(
        str(folder / "pcd" / f"{GRABBER_FRAME}.pcd"), remove_nan_points=False, remove_infinite_points=False
    )
    xyz = np.asarray(cloud.points).reshape(480, 640, 3)
    colours = np.rint(np.asarray(cloud.colors) * 255).astype(np.uint8).reshape(480, 640, 3)
    return {"rgb": rgb, "depth_mm": depth_mm, "pcd_xyz": xyz, "pcd_rgb": colours}


def test_real_kinect_rgbd_messages_give_the_pcl_cloud(kinect_frame):
    assert kinect_frame["depth_mm"].dtype == np.uint16 and kinect_frame["depth_mm"].shape == (480, 640)
    depth_msg = array_to_image(kinect_frame["depth_mm"], "16UC1", frame_id="openni_depth_optical_frame")
    colour_msg = array_to_image(kinect_frame["rgb"], "rgb8")
    info = intrinsics_to_camera_info(CameraIntrinsics(525.0, 525.0, 320.0, 240.0, 640, 480))
    msg = depth_to_pointcloud2(depth_msg, info, colour_msg, organized=True)
    cloud = pointcloud2_to_arrays(msg, organized=True)
    pcd_xyz = kinect_frame["pcd_xyz"]
    missing = np.isnan(pcd_xyz).any(axis=-1)
    assert 0.1 < missing.mean() < 0.2
    np.testing.assert_array_equal(np.isnan(cloud.xyz).any(axis=-1), missing)
    np.testing.assert_allclose(cloud.xyz[~missing], pcd_xyz[~missing], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(cloud.rgb, kinect_frame["pcd_rgb"])


@pytest.mark.parametrize("rgb_layout", RGB_LAYOUTS)
def test_real_kinect_colour_round_trips_through_pointcloud2(kinect_frame, rgb_layout):
    xyz = np.nan_to_num(kinect_frame["pcd_xyz"].astype(np.float32), nan=0.0)
    msg = arrays_to_pointcloud2(xyz, kinect_frame["rgb"], rgb_layout=rgb_layout, big_endian=rgb_layout == "rgb_uint32")
    decoded = pointcloud2_to_arrays(msg, organized=True)
    np.testing.assert_array_equal(decoded.rgb, kinect_frame["rgb"])
    np.testing.assert_array_equal(decoded.xyz, xyz)


def _mcap_messages(path: Path) -> dict[str, list[bytes]]:
    """CDR payloads by topic from an MCAP file with uncompressed chunks (test-side reader)."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89MCAP0\r\n"

    def records(buffer: bytes, position: int, end: int):
        while position + 9 <= end:
            opcode, length = buffer[position], struct.unpack_from("<Q", buffer, position + 1)[0]
            yield opcode, buffer[position + 9 : position + 9 + length]
            position += 9 + length

    topics: dict[int, str] = {}
    payloads: dict[str, list[bytes]] = {}
    for opcode, body in records(blob, 8, len(blob) - 8):
        if opcode != 0x06:  # Chunk
            continue
        compression_length = struct.unpack_from("<I", body, 28)[0]
        assert body[32 : 32 + compression_length] == b"", "compressed chunks are not supported here"
        start = 32 + compression_length
        inner_length = struct.unpack_from("<Q", body, start)[0]
        inner = body[start + 8 : start + 8 + inner_length]
        for inner_opcode, record in records(inner, 0, len(inner)):
            if inner_opcode == 0x04:  # Channel: id u16, schema u16, topic string
                channel_id = struct.unpack_from("<H", record, 0)[0]
                topic_length = struct.unpack_from("<I", record, 4)[0]
                topics[channel_id] = record[8 : 8 + topic_length].decode()
            elif inner_opcode == 0x05:  # Message: channel u16, sequence u32, log/publish time u64, data
                channel_id = struct.unpack_from("<H", record, 0)[0]
                payloads.setdefault(topics[channel_id], []).append(record[22:])
    return payloads


@pytest.fixture(scope="module")
def ouster_bag(realdata: Path) -> dict[str, list[bytes]]:
    return _mcap_messages(realdata / "rosbag" / "ouster_os1_rosbag2" / "ouster_os1_rosbag2.mcap")


def test_real_ouster_pointcloud2_decodes_to_its_raw_bytes(ouster_bag):
    payloads = ouster_bag["/os1_cloud_node/points"]
    assert len(payloads) == 2
    for payload in payloads:
        msg = deserialize_message(payload, PointCloud2)
        assert (msg.height, msg.width, msg.point_step, msg.is_bigendian) == (64, 2048, 48, False)
        assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
            ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 16, 7), ("t", 20, 6),
            ("reflectivity", 24, 4), ("ring", 26, 2), ("noise", 28, 4), ("range", 32, 6),
        ]
        raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(64, 2048, 48)
        expected_xyz = raw[..., 0:12].copy().view("<f4").reshape(64, 2048, 3)
        expected_intensity = raw[..., 16:20].copy().view("<f4").reshape(64, 2048)
        range_mm = raw[..., 32:36].copy().view("<u4").reshape(64, 2048)

        grid = pointcloud2_to_arrays(msg, organized=True)
        assert grid.frame_id == "os1_lidar" and grid.stamp[0] == 1588075038
        np.testing.assert_array_equal(grid.xyz, expected_xyz)
        np.testing.assert_array_equal(grid.intensity, expected_intensity)
        assert grid.rgb is None

        # No NaNs in this recording; "no return" is (0, 0, 0) with range 0, kept by default.
        everything = pointcloud2_to_arrays(msg)
        assert len(everything) == 64 * 2048
        returns = pointcloud2_to_arrays(msg, drop_zeros=True)
        hit = range_mm.reshape(-1) > 0
        assert 40_000 < hit.sum() < 50_000
        np.testing.assert_array_equal(returns.xyz, expected_xyz.reshape(-1, 3)[hit])
        np.testing.assert_array_equal(returns.intensity, expected_intensity.reshape(-1)[hit])
        np.testing.assert_allclose(np.linalg.norm(returns.xyz, axis=1), range_mm.reshape(-1)[hit] / 1000.0, atol=2e-3)


def test_real_ouster_mono8_images_decode(ouster_bag):
    for topic in ("/img_node/range_image", "/img_node/intensity_image"):
        for payload in ouster_bag[topic]:
            msg = deserialize_message(payload, Image)
            pixels = image_to_array(msg)
            assert pixels.shape == (64, 2048) and msg.encoding == "mono8"
            rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(64, msg.step)
            np.testing.assert_array_equal(pixels, rows[:, :2048])
            np.testing.assert_array_equal(image_to_rgb(msg), np.repeat(pixels[..., None], 3, axis=-1))


# --------------------------------------------------------------------------- benchmark command


def test_bench_conversions_writes_a_consistent_report(tmp_path, capsys):
    import json

    from threed_llm_ros.ros import bench_conversions

    output = tmp_path / "bench" / "conversions.json"
    assert bench_conversions.main(["--repeats", "3", "--width", "32", "--height", "24", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["frame"] == {"width": 32, "height": 24, "points": 768} and report["repeats"] == 3
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["numpy"] == np.__version__
    assert len(report["results"]) >= 5 and "depth + bgr8 + CameraInfo -> PointCloud2" in report["results"]
    for timing in report["results"].values():
        assert 0 < timing["min_ms"] <= timing["median_ms"] <= timing["max_ms"]
    printed = capsys.readouterr().out
    assert all(name in printed for name in report["results"])
