"""Conversions between ROS 2 sensor messages and numpy arrays (vectorised, few copies).

Decoders read ``msg.data`` through the buffer protocol (``np.frombuffer``), so they work on
rclpy messages (``array.array('B')``) and on messages from bag readers whose ``data`` is
``bytes`` or a numpy array. Encoders fill ``data`` with an ``array.array('B')``: rclpy's
generated setters take that type as is, while ``bytes`` or lists are re-checked element by
element when ``ROS_PYTHON_CHECK_FIELDS=1`` (the default check mode of older distros).

Decisions worth knowing:

* ``is_dense`` is a promise that drivers break; decoders treat it as a hint and always test
  x/y/z for finiteness (about a millisecond for 640x480 points), so a cloud that claims
  ``is_dense=True`` but holds NaNs still loses them.
* Only non-finite points are invalid. Points at exactly (0, 0, 0), which many lidar drivers
  emit for "no return", are kept unless ``drop_zeros=True``.
* Depth: 16UC1/mono16 are millimetres with 0 = missing; 32FC1 is metres with 0, NaN, ±inf
  and negative values = missing (REP 118's "too near/too far" infinities are not kept).
* Decoded images may share memory with ``msg.data``; copy before writing into them.

Every malformed message raises one exception type from :mod:`threed_llm_ros.errors`
(PointCloudFormatError, ImageEncodingError, CameraInfoError) whose ``field`` names the
message field at fault.
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from threed_llm_ros.errors import CameraInfoError, ImageEncodingError, MessageFormatError, PointCloudFormatError
from threed_llm_ros.geometry.camera import CameraIntrinsics, depth_to_points

__all__ = [
    "CloudArrays",
    "RGB_LAYOUTS",
    "IMAGE_ENCODINGS",
    "DEPTH_ENCODINGS",
    "pointcloud2_to_arrays",
    "arrays_to_pointcloud2",
    "image_to_array",
    "image_to_rgb",
    "depth_image_to_metres",
    "array_to_image",
    "depth_metres_to_image",
    "camera_info_to_intrinsics",
    "intrinsics_to_camera_info",
    "depth_to_pointcloud2",
    "stamp_to_tuple",
    "tuple_to_stamp",
]

# PointField datatype code -> numpy type character (byte order added per message).
_POINTFIELD_TYPES: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}

RGB_LAYOUTS: tuple[str, ...] = ("rgb_float32", "rgb_uint32", "rgba_uint32", "separate_uint8")

# Image encoding -> (numpy type character, channels).
IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "8UC1": ("u1", 1),
    "mono16": ("u2", 1),
    "16UC1": ("u2", 1),
    "32FC1": ("f4", 1),
}
DEPTH_ENCODINGS: tuple[str, ...] = ("16UC1", "mono16", "32FC1")

_MILLIMETRES_PER_METRE = np.float32(1000.0)
_MAX_UINT16 = 65535


# --------------------------------------------------------------------------- stamps


MIN_FOCAL_PX = 1.0  # a focal length in pixels; below this (5e-324 got through once) the projection overflows
MAX_FOCAL_PX = 1e5


def stamp_to_tuple(stamp: Any) -> tuple[int, int]:
    """A builtin_interfaces/Time (or anything with ``sec``/``nanosec``) as ``(sec, nanosec)``;
    MessageFormatError for a nanosec field that is not below 1e9 (a stamp no reply can carry)."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nanosec < 1_000_000_000:
        raise MessageFormatError("header.stamp.nanosec", f"is {nanosec}; it must be in [0, 1e9): carry whole seconds into sec")
    return sec, nanosec


def tuple_to_stamp(sec_nsec: tuple[int, int]) -> Time:
    """``(sec, nanosec)`` as a builtin_interfaces/Time; rejects values the wire type cannot hold."""
    try:
        sec, nanosec = (int(value) for value in sec_nsec)
    except (TypeError, ValueError) as error:
        raise MessageFormatError("header.stamp", f"expected (sec, nanosec) integers, got {sec_nsec!r}") from error
    if not -(2**31) <= sec < 2**31:
        raise MessageFormatError("header.stamp", f"sec {sec} does not fit int32")
    if not 0 <= nanosec < 1_000_000_000:
        raise MessageFormatError("header.stamp", f"nanosec {nanosec} must be in [0, 1e9)")
    return Time(sec=sec, nanosec=nanosec)


def _header(frame_id: str, stamp: tuple[int, int]) -> Header:
    return Header(frame_id=str(frame_id), stamp=tuple_to_stamp(stamp))


# --------------------------------------------------------------------------- raw bytes


def _message_bytes(data: Any, error_type: type[MessageFormatError] = MessageFormatError) -> np.ndarray:
    """A message's ``data`` as a flat uint8 array, sharing memory when ``data`` is a buffer.

    Accepts array.array (rclpy), bytes/bytearray/memoryview, numpy arrays (bag readers) and
    sequences of ints; anything else raises ``error_type`` naming "data".
    """
    try:
        if isinstance(data, np.ndarray):
            return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        try:
            return np.frombuffer(data, dtype=np.uint8)
        except (TypeError, ValueError, BufferError):
            pass
        values = np.asarray(data)
        if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
            raise TypeError(f"not a flat sequence of integers (dtype {values.dtype}, shape {values.shape})")
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError("values outside 0..255")
        return values.astype(np.uint8)
    except (TypeError, ValueError, OverflowError, BufferError) as error:
        raise error_type("data", f"cannot read as bytes ({type(data).__name__}): {error}") from error


def _bytes_for_message(values: np.ndarray) -> array.array:
    """Copy a contiguous numpy array's bytes into the ``array.array('B')`` rclpy stores as is."""
    buffer = array.array("B")
    buffer.frombytes(np.ascontiguousarray(values).reshape(-1).view(np.uint8))
    return buffer


# --------------------------------------------------------------------------- PointCloud2


@dataclass
class CloudArrays:
    """A decoded PointCloud2: positions and optional colour/intensity, plus its header."""

    xyz: np.ndarray
    """(N, 3) float32, or (H, W, 3) when decoded with ``organized=True``."""
    rgb: np.ndarray | None
    """(N, 3) / (H, W, 3) uint8, or None when the cloud has no colour."""
    intensity: np.ndarray | None
    """(N,) / (H, W) float32, or None when the cloud has no ``intensity`` field."""
    frame_id: str
    stamp: tuple[int, int]
    """(sec, nanosec) of the message header."""

    def __len__(self) -> int:
        return int(np.prod(self.xyz.shape[:-1]))


@dataclass(frozen=True)
class _FieldLayout:
    name: str
    offset: int
    dtype: np.dtype
    count: int


_USED_FIELDS = ("x", "y", "z", "rgb", "rgba", "r", "g", "b", "intensity")


def _field_layouts(msg: Any) -> dict[str, _FieldLayout]:
    """Validate ``msg.fields`` against ``point_step`` and return the layouts by name."""
    byte_order = ">" if msg.is_bigendian else "<"
    point_step = int(msg.point_step)
    layouts: dict[str, _FieldLayout] = {}
    for field in msg.fields:
        name = str(field.name)
        datatype, offset, count = int(field.datatype), int(field.offset), int(field.count)
        if datatype not in _POINTFIELD_TYPES:
            raise PointCloudFormatError(
                f"fields.{name}.datatype", f"unknown PointField datatype code {datatype} (known: 1..8, INT8..FLOAT64)"
            )
        dtype = np.dtype(byte_order + _POINTFIELD_TYPES[datatype])
        if offset < 0 or offset + dtype.itemsize * count > point_step:
            raise PointCloudFormatError(
                f"fields.{name}.offset",
                f"offset {offset} + {count} x {dtype.itemsize} bytes exceeds point_step {point_step}",
            )
        if name in _USED_FIELDS:
            if name in layouts:
                raise PointCloudFormatError(f"fields.{name}", "field appears more than once")
            if count != 1:
                raise PointCloudFormatError(f"fields.{name}.count", f"must be 1, got {count}")
        layouts.setdefault(name, _FieldLayout(name, offset, dtype, count))
    for axis in ("x", "y", "z"):
        if axis not in layouts:
            names = [str(field.name) for field in msg.fields]
            raise PointCloudFormatError("fields", f"no '{axis}' field (fields are {names})")
        if layouts[axis].dtype.kind != "f":
            raise PointCloudFormatError(
                f"fields.{axis}.datatype", f"must be FLOAT32 or FLOAT64, got {layouts[axis].dtype.name}"
            )
    return layouts


def _check_cloud_geometry(msg: Any, data_length: int) -> tuple[int, int, int, int]:
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    for name, value in (("height", height), ("width", width), ("point_step", point_step), ("row_step", row_step)):
        if value < 0:
            raise PointCloudFormatError(name, f"must not be negative, got {value}")
    if height * width > 0 and point_step <= 0:
        raise PointCloudFormatError("point_step", f"must be positive for a non-empty cloud, got {point_step}")
    if row_step < width * point_step:
        raise PointCloudFormatError(
            "row_step", f"{row_step} is less than width * point_step = {width} * {point_step}"
        )
    if data_length != row_step * height:
        raise PointCloudFormatError(
            "data", f"holds {data_length} bytes but row_step * height = {row_step} * {height} = {row_step * height}"
        )
    return height, width, point_step, row_step


def _strided_field(
    buffer: np.ndarray, offset: int, dtype: np.dtype, height: int, width: int, row_step: int, point_step: int
) -> np.ndarray:
    """A zero-copy (height, width) view of one field of every point."""
    return np.ndarray(shape=(height, width), dtype=dtype, buffer=buffer, offset=offset, strides=(row_step, point_step))


def _colour_byte_offsets(layouts: dict[str, _FieldLayout], big_endian: bool) -> list[int] | None:
    """Byte offsets of red, green and blue inside a point, or None when there is no colour.

    Uses a packed 4-byte ``rgb``/``rgba`` field (0x00RRGGBB / 0xAARRGGBB in the message's
    byte order) if present, else separate UINT8 ``r``, ``g``, ``b`` fields.
    """
    packed = layouts.get("rgb") or layouts.get("rgba")
    if packed is not None:
        if packed.dtype.itemsize != 4:
            raise PointCloudFormatError(
                f"fields.{packed.name}.datatype", f"packed colour must be 4 bytes, got {packed.dtype.name}"
            )
        byte_of = {"r": 1, "g": 2, "b": 3} if big_endian else {"r": 2, "g": 1, "b": 0}
        return [packed.offset + byte_of[channel] for channel in "rgb"]
    if not all(channel in layouts for channel in "rgb"):
        return None
    for channel in "rgb":
        if layouts[channel].dtype != np.dtype("u1"):
            raise PointCloudFormatError(
                f"fields.{channel}.datatype",
                f"separate colour channels must be UINT8, got {layouts[channel].dtype.name}",
            )
    return [layouts[channel].offset for channel in "rgb"]


def pointcloud2_to_arrays(
    msg: PointCloud2, *, keep_invalid: bool = False, organized: bool = False, drop_zeros: bool = False
) -> CloudArrays:
    """Decode a PointCloud2 into numpy arrays.

    Handles float32/float64 x/y/z, any field order, offsets with gaps, padding
    (``point_step`` and ``row_step`` beyond the fields), both byte orders, packed
    ``rgb``/``rgba`` (FLOAT32 or (U)INT32) or separate UINT8 ``r``/``g``/``b``, and an
    ``intensity`` field of any numeric type. Non-finite points are dropped unless
    ``keep_invalid``; ``organized=True`` returns the (H, W) grid with invalid points kept.
    ``drop_zeros`` also treats points at exactly (0, 0, 0) as invalid (set to NaN when
    organized). ``is_dense`` is not trusted (see the module docstring).
    """
    buffer = _message_bytes(msg.data, PointCloudFormatError)
    height, width, point_step, row_step = _check_cloud_geometry(msg, buffer.size)
    layouts = _field_layouts(msg)
    big_endian = bool(msg.is_bigendian)
    frame_id = str(msg.header.frame_id)
    stamp = stamp_to_tuple(msg.header.stamp)
    colour_offsets = _colour_byte_offsets(layouts, big_endian)
    if height * width == 0:
        shape = (height, width) if organized else (0,)
        return CloudArrays(
            xyz=np.empty(shape + (3,), np.float32),
            rgb=None if colour_offsets is None else np.empty(shape + (3,), np.uint8),
            intensity=np.empty(shape, np.float32) if "intensity" in layouts else None,
            frame_id=frame_id,
            stamp=stamp,
        )

    def view(offset: int, dtype: np.dtype) -> np.ndarray:
        return _strided_field(buffer, offset, dtype, height, width, row_step, point_step)

    x_layout, y_layout, z_layout = layouts["x"], layouts["y"], layouts["z"]
    step = x_layout.dtype.itemsize
    if (
        x_layout.dtype == y_layout.dtype == z_layout.dtype
        and y_layout.offset == x_layout.offset + step
        and z_layout.offset == x_layout.offset + 2 * step
    ):
        # The usual x, y, z run of one type: copy each point's 3 values as one opaque block
        # (3-4x faster than a strided (H, W, 3) copy), then convert type/byte order if needed.
        blocks = view(x_layout.offset, np.dtype((np.void, 3 * step))).copy()
        xyz = blocks.view(x_layout.dtype).reshape(height, width, 3).astype(np.float32, copy=False)
    else:
        xyz = np.empty((height, width, 3), dtype=np.float32)
        for index, layout in enumerate((x_layout, y_layout, z_layout)):
            xyz[..., index] = view(layout.offset, layout.dtype)
    rgb = None
    if colour_offsets is not None:
        rgb = np.empty((height, width, 3), dtype=np.uint8)
        for index, offset in enumerate(colour_offsets):
            rgb[..., index] = view(offset, np.dtype("u1"))
    intensity = None
    if "intensity" in layouts:
        intensity = view(layouts["intensity"].offset, layouts["intensity"].dtype).astype(np.float32)

    # Per-column tests: reductions over a length-3 last axis are ~10x slower in numpy.
    drop = None
    if not (keep_invalid or organized):
        drop = ~(np.isfinite(xyz[..., 0]) & np.isfinite(xyz[..., 1]) & np.isfinite(xyz[..., 2]))
    if drop_zeros:
        at_origin = (xyz[..., 0] == 0) & (xyz[..., 1] == 0) & (xyz[..., 2] == 0)
        drop = at_origin if drop is None else drop | at_origin
    if drop is not None and not drop.any():
        drop = None
    if organized:
        if drop is not None:
            xyz[drop] = np.nan
        return CloudArrays(xyz=xyz, rgb=rgb, intensity=intensity, frame_id=frame_id, stamp=stamp)

    xyz = xyz.reshape(-1, 3)
    rgb = None if rgb is None else rgb.reshape(-1, 3)
    intensity = None if intensity is None else intensity.reshape(-1)
    if drop is not None:
        keep = ~drop.reshape(-1)  # compress() is several times faster than boolean indexing of rows
        xyz = xyz.compress(keep, axis=0)
        rgb = None if rgb is None else rgb.compress(keep, axis=0)
        intensity = None if intensity is None else intensity.compress(keep)
    return CloudArrays(xyz=xyz, rgb=rgb, intensity=intensity, frame_id=frame_id, stamp=stamp)


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def _check_per_point(name: str, values: np.ndarray, grid_shape: tuple[int, ...], channels: int | None) -> None:
    expected = grid_shape if channels is None else grid_shape + (channels,)
    if values.shape != expected:
        raise PointCloudFormatError(name, f"shape {values.shape} does not match the points, expected {expected}")


def arrays_to_pointcloud2(
    xyz: np.ndarray,
    rgb: np.ndarray | None = None,
    intensity: np.ndarray | None = None,
    *,
    frame_id: str = "",
    stamp: tuple[int, int] = (0, 0),
    rgb_layout: str = "rgb_float32",
    xyz_dtype: Any = np.float32,
    big_endian: bool = False,
    padding_bytes: int = 0,
    is_dense: bool | None = None,
) -> PointCloud2:
    """Encode points (N×3, or H×W×3 for an organised cloud) and optional colour/intensity.

    Fields are x, y, z (``xyz_dtype`` float32 or float64), then colour per ``rgb_layout``
    ("rgb_float32": PCL's packed 0x00RRGGBB in a FLOAT32 ``rgb``; "rgb_uint32": the same in a
    UINT32 ``rgb``; "rgba_uint32": 0xAARRGGBB in UINT32 ``rgba``, alpha 255 unless rgb has a
    4th channel; "separate_uint8": UINT8 ``r``, ``g``, ``b``), then FLOAT32 ``intensity``;
    each field aligned to its size, ``padding_bytes`` zero bytes appended to every point.
    ``is_dense=None`` sets it from whether every point is finite.
    """
    points = np.asarray(xyz)
    if points.ndim == 3 and points.shape[2] == 3:
        height, width = points.shape[:2]
    elif points.ndim == 2 and points.shape[1] == 3:
        height, width = 1, points.shape[0]
    else:
        raise PointCloudFormatError("xyz", f"must be (N, 3) or (H, W, 3), got shape {points.shape}")
    grid_shape = points.shape[:-1]
    coordinate_type = np.dtype(xyz_dtype)
    if coordinate_type not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise PointCloudFormatError("xyz_dtype", f"must be float32 or float64, got {coordinate_type}")
    if rgb_layout not in RGB_LAYOUTS:
        raise PointCloudFormatError("rgb_layout", f"must be one of {RGB_LAYOUTS}, got {rgb_layout!r}")
    if int(padding_bytes) < 0:
        raise PointCloudFormatError("point_step", f"padding_bytes must be >= 0, got {padding_bytes}")
    byte_order = ">" if big_endian else "<"

    names: list[str] = []
    formats: list[str] = []
    offsets: list[int] = []
    fields: list[PointField] = []

    def add_field(name: str, datatype: int, storage: str, offset: int) -> int:
        names.append(name)
        formats.append(byte_order + storage)
        offsets.append(offset)
        fields.append(PointField(name=name, offset=offset, datatype=datatype, count=1))
        return offset + np.dtype(storage).itemsize

    coordinate_code = PointField.FLOAT32 if coordinate_type.itemsize == 4 else PointField.FLOAT64
    cursor = 0
    for axis in "xyz":
        cursor = add_field(axis, coordinate_code, coordinate_type.str[1:], cursor)

    colours = None
    if rgb is not None:
        colours = np.asarray(rgb)
        if colours.dtype != np.uint8:
            raise PointCloudFormatError("rgb", f"must be uint8, got {colours.dtype}")
        if colours.shape[:-1] != grid_shape or colours.shape[-1] not in (3, 4):
            raise PointCloudFormatError(
                "rgb", f"shape {colours.shape} does not match the points, expected {grid_shape + (3,)}"
            )
        if rgb_layout == "separate_uint8":
            for channel in "rgb":
                cursor = add_field(channel, PointField.UINT8, "u1", cursor)
        else:
            name = "rgba" if rgb_layout == "rgba_uint32" else "rgb"
            code = PointField.FLOAT32 if rgb_layout == "rgb_float32" else PointField.UINT32
            # Stored through a uint32 view so the packed bits are written exactly.
            cursor = add_field(name, code, "u4", _align(cursor, 4))

    if intensity is not None:
        intensity = np.asarray(intensity)
        _check_per_point("intensity", intensity, grid_shape, None)
        cursor = add_field("intensity", PointField.FLOAT32, "f4", _align(cursor, 4))

    point_step = cursor + int(padding_bytes)
    record_type = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    records = np.zeros(grid_shape, dtype=record_type)
    record_bytes = records.view(np.uint8).reshape(grid_shape + (point_step,))
    # x, y, z are consecutive: copy each point's three values as one opaque block of bytes
    # in the wire byte order (several times faster than a strided (N, 3) copy).
    block_type = np.dtype((np.void, 3 * coordinate_type.itemsize))
    coordinates = np.ascontiguousarray(points, dtype=np.dtype(byte_order + coordinate_type.str[1:]))
    coordinate_blocks = np.ndarray(shape=grid_shape, dtype=block_type, buffer=records, strides=records.strides)
    coordinate_blocks[...] = coordinates.view(block_type).reshape(grid_shape)
    if colours is not None:
        if rgb_layout == "separate_uint8":
            for index, channel in enumerate("rgb"):
                records[channel] = colours[..., index]
        else:
            # Packed 0xAARRGGBB written byte by byte: B, G, R, A in little-endian order.
            start = offsets[names.index("rgba" if rgb_layout == "rgba_uint32" else "rgb")]
            byte_positions = {"b": 0, "g": 1, "r": 2, "a": 3}
            if big_endian:
                byte_positions = {channel: 3 - position for channel, position in byte_positions.items()}
            for index, channel in enumerate("rgb"):
                record_bytes[..., start + byte_positions[channel]] = colours[..., index]
            if rgb_layout == "rgba_uint32":
                alpha = colours[..., 3] if colours.shape[-1] == 4 else np.uint8(255)
                record_bytes[..., start + byte_positions["a"]] = alpha
    if intensity is not None:
        records["intensity"] = intensity

    msg = PointCloud2()
    msg.header = _header(frame_id, stamp)
    msg.height = int(height)
    msg.width = int(width)
    msg.fields = fields
    msg.is_bigendian = bool(big_endian)
    msg.point_step = int(point_step)
    msg.row_step = int(point_step * width)
    msg.data = _bytes_for_message(records)
    msg.is_dense = bool(np.isfinite(points).all()) if is_dense is None else bool(is_dense)
    return msg


# --------------------------------------------------------------------------- Image


def _image_layout(encoding: str) -> tuple[str, int]:
    try:
        return IMAGE_ENCODINGS[encoding]
    except KeyError:
        raise ImageEncodingError(
            "encoding", f"unsupported encoding {encoding!r}; supported: {sorted(IMAGE_ENCODINGS)}"
        ) from None


def image_to_array(msg: Image) -> np.ndarray:
    """Pixels as stored: H×W (one channel) or H×W×C, native byte order.

    Honours ``step`` (rows padded beyond ``width``) and ``is_bigendian`` for 16- and 32-bit
    encodings. Shares memory with ``msg.data`` when no conversion is needed.
    """
    encoding = str(msg.encoding)
    type_character, channels = _image_layout(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    for name, value in (("height", height), ("width", width), ("step", step)):
        if value < 0:
            raise ImageEncodingError(name, f"must not be negative, got {value}")
    stored_type = np.dtype((">" if msg.is_bigendian else "<") + type_character)
    pixel_bytes = stored_type.itemsize * channels
    if step < width * pixel_bytes:
        raise ImageEncodingError(
            "step", f"{step} is less than width * bytes per pixel = {width} * {pixel_bytes} for {encoding}"
        )
    buffer = _message_bytes(msg.data, ImageEncodingError)
    if buffer.size != step * height:
        raise ImageEncodingError("data", f"holds {buffer.size} bytes but step * height = {step} * {height}")
    shape: tuple[int, ...] = (height, width) if channels == 1 else (height, width, channels)
    native_type = stored_type.newbyteorder("=")
    if height * width == 0:
        return np.empty(shape, dtype=native_type)
    strides = (step, pixel_bytes) if channels == 1 else (step, pixel_bytes, stored_type.itemsize)
    pixels = np.ndarray(shape=shape, dtype=stored_type, buffer=buffer, strides=strides)
    if not stored_type.isnative and stored_type.itemsize > 1:
        return pixels.astype(native_type)
    return pixels


def image_to_rgb(msg: Image) -> np.ndarray:
    """H×W×3 uint8 RGB from rgb8, bgr8, rgba8, bgra8, mono8/8UC1 (grey replicated) or
    mono16 (top 8 bits, i.e. value >> 8)."""
    encoding = str(msg.encoding)
    pixels = image_to_array(msg)
    if encoding in ("rgb8", "rgba8"):
        rgb = pixels[..., :3]
    elif encoding == "bgr8":
        rgb = pixels[..., ::-1]
    elif encoding == "bgra8":
        rgb = pixels[..., 2::-1]
    elif encoding in ("mono8", "8UC1"):
        rgb = np.repeat(pixels[..., None], 3, axis=-1)
    elif encoding == "mono16":
        rgb = np.repeat((pixels >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    else:
        raise ImageEncodingError(
            "encoding", f"{encoding!r} is not a colour encoding; use rgb8, bgr8, rgba8, bgra8, mono8 or mono16"
        )
    return np.ascontiguousarray(rgb)


def depth_image_to_metres(msg: Image) -> np.ndarray:
    """H×W float32 depth in metres with NaN where missing.

    16UC1 and mono16 hold millimetres (0 = missing); 32FC1 holds metres (0, NaN, ±inf and
    negative values = missing).
    """
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise ImageEncodingError("encoding", f"{encoding!r} is not a depth encoding; use one of {DEPTH_ENCODINGS}")
    pixels = image_to_array(msg)
    if encoding == "32FC1":
        metres = pixels.astype(np.float32, copy=True)
        with np.errstate(invalid="ignore"):
            missing = ~(np.isfinite(metres) & (metres > 0))
    else:
        metres = np.divide(pixels, _MILLIMETRES_PER_METRE, dtype=np.float32)
        missing = pixels == 0
    metres[missing] = np.nan
    return metres


def array_to_image(
    array_values: np.ndarray,
    encoding: str,
    *,
    frame_id: str = "",
    stamp: tuple[int, int] = (0, 0),
    big_endian: bool = False,
) -> Image:
    """Encode an H×W or H×W×C array as an Image with a tight ``step``.

    8-bit encodings need uint8 data, mono16/16UC1 uint16, 32FC1 any float (stored as
    float32). Colour channels must already be in the encoding's order (bgr8 expects BGR).
    """
    type_character, channels = _image_layout(encoding)
    pixels = np.asarray(array_values)
    if channels == 1 and pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    expected_ndim = 2 if channels == 1 else 3
    if pixels.ndim != expected_ndim or (channels > 1 and pixels.shape[2] != channels):
        wanted = "H×W" if channels == 1 else f"H×W×{channels}"
        raise ImageEncodingError("encoding", f"{encoding} needs a {wanted} array, got shape {pixels.shape}")
    target = np.dtype(type_character)
    if target.kind == "f" and pixels.dtype.kind != "f":
        raise ImageEncodingError("encoding", f"{encoding} needs floating-point data, got {pixels.dtype}")
    if target.kind == "u" and pixels.dtype != target:
        raise ImageEncodingError("encoding", f"{encoding} needs {target.name} data, got {pixels.dtype}")
    stored = pixels.astype(np.dtype((">" if big_endian else "<") + type_character), copy=False)
    msg = Image()
    msg.header = _header(frame_id, stamp)
    msg.height = int(pixels.shape[0])
    msg.width = int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(bool(big_endian))
    msg.step = int(pixels.shape[1] * target.itemsize * channels)
    msg.data = _bytes_for_message(stored)
    return msg


def depth_metres_to_image(
    depth_m: np.ndarray,
    encoding: str = "16UC1",
    *,
    frame_id: str = "",
    stamp: tuple[int, int] = (0, 0),
) -> Image:
    """Encode H×W metric depth: 16UC1/mono16 as rounded millimetres (missing, NaN, inf or
    <= 0 → 0; beyond 65.535 m clipped to 65535), 32FC1 as metres (missing → NaN)."""
    if encoding not in DEPTH_ENCODINGS:
        raise ImageEncodingError("encoding", f"{encoding!r} is not a depth encoding; use one of {DEPTH_ENCODINGS}")
    depth = np.asarray(depth_m, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        missing = ~(np.isfinite(depth) & (depth > 0))
    if encoding == "32FC1":
        stored = np.where(missing, np.float32(np.nan), depth)
    else:
        millimetres = np.rint(np.where(missing, np.float32(0.0), depth) * _MILLIMETRES_PER_METRE)
        stored = np.clip(millimetres, 0, _MAX_UINT16).astype(np.uint16)
    return array_to_image(stored, encoding, frame_id=frame_id, stamp=stamp)


# --------------------------------------------------------------------------- CameraInfo


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    """Intrinsics of the image the camera publishes, from K, width/height, binning and ROI.

    ROI shifts the principal point and sets the size; binning divides focal lengths and
    principal point (image_geometry's convention). Skew (K[0,1]) is ignored. Keeps
    ``distortion_model`` and ``d``.
    """
    try:
        k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise CameraInfoError("k", f"cannot read as 9 numbers: {error}") from error
    if k.size != 9:
        raise CameraInfoError("k", f"must hold 9 values (row-major 3x3), got {k.size}")
    if not np.isfinite(k).all():
        raise CameraInfoError("k", f"holds non-finite values: {k.tolist()}")
    if not k.any():
        raise CameraInfoError("k", "is all zeros: the camera is not calibrated")
    fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
    if not (MIN_FOCAL_PX <= fx <= MAX_FOCAL_PX and MIN_FOCAL_PX <= fy <= MAX_FOCAL_PX):
        raise CameraInfoError("k", f"focal lengths must be {MIN_FOCAL_PX:g}–{MAX_FOCAL_PX:g} pixels, got fx={fx}, fy={fy}: "
                                   "calibrate the camera or fix its camera_info")
    width, height = int(msg.width), int(msg.height)
    if width <= 0:
        raise CameraInfoError("width", f"must be positive, got {width}")
    if height <= 0:
        raise CameraInfoError("height", f"must be positive, got {height}")
    roi = msg.roi
    if int(roi.width) > 0 and int(roi.height) > 0:
        cx -= int(roi.x_offset)
        cy -= int(roi.y_offset)
        width, height = int(roi.width), int(roi.height)
    binning_x, binning_y = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    fx, cx, width = fx / binning_x, cx / binning_x, width // binning_x
    fy, cy, height = fy / binning_y, cy / binning_y, height // binning_y
    if width <= 0 or height <= 0:
        raise CameraInfoError("binning_x/binning_y", f"binning leaves an empty {width}x{height} image")
    return CameraIntrinsics(
        fx=fx,
        fy=fy,
        cx=cx,
        cy=cy,
        width=width,
        height=height,
        distortion_model=str(msg.distortion_model),
        distortion=tuple(float(value) for value in msg.d),
    )


def intrinsics_to_camera_info(
    intrinsics: CameraIntrinsics, *, frame_id: str = "", stamp: tuple[int, int] = (0, 0)
) -> CameraInfo:
    """A CameraInfo for ``intrinsics``: K, P = [K | 0], R = identity, D and its model."""
    fx, fy, cx, cy = (float(value) for value in (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy))
    msg = CameraInfo()
    msg.header = _header(frame_id, stamp)
    msg.width = int(intrinsics.width)
    msg.height = int(intrinsics.height)
    msg.distortion_model = str(intrinsics.distortion_model)
    msg.d = array.array("d", (float(value) for value in intrinsics.distortion))
    msg.k = np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], dtype=np.float64)
    msg.r = np.eye(3, dtype=np.float64).reshape(-1)
    msg.p = np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=np.float64)
    return msg


# --------------------------------------------------------------------------- RGB-D


def depth_to_pointcloud2(
    depth_msg: Image,
    info_msg: CameraInfo,
    color_msg: Image | None = None,
    *,
    min_range: float = 0.0,
    max_range: float = math.inf,
    rgb_layout: str = "rgb_float32",
    organized: bool = False,
) -> PointCloud2:
    """Back-project a depth image (+ aligned colour) into a PointCloud2 in the depth frame.

    Carries the depth header's frame_id and stamp. Unorganised (valid points only) unless
    ``organized``, which keeps the H×W grid with NaN for missing depth.
    """
    depth = depth_image_to_metres(depth_msg)
    intrinsics = camera_info_to_intrinsics(info_msg)
    color = None if color_msg is None else image_to_rgb(color_msg)
    xyz, rgb = depth_to_points(
        depth, intrinsics, min_range=min_range, max_range=max_range, color=color, organized=organized
    )
    return arrays_to_pointcloud2(
        xyz,
        rgb,
        frame_id=str(depth_msg.header.frame_id),
        stamp=stamp_to_tuple(depth_msg.header.stamp),
        rgb_layout=rgb_layout,
    )
