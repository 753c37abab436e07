"""Image <-> numpy arrays: colour and mono encodings, and depth in metres (16UC1/mono16 mm, 32FC1 m)."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from threed_llm_ros.errors import ImageEncodingError
from threed_llm_ros.ros.conversions.messages import _bytes_for_message, _header, _message_bytes

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
