"""Stamps, headers and raw ``data`` bytes shared by every message conversion."""

from __future__ import annotations

import array
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from threed_llm_ros.errors import MessageFormatError


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
