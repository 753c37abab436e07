"""Exception types shared by the library and the nodes.

Each bad-input case raises one specific type whose message names the offending field,
so a node can log one clear line, count it in diagnostics and keep serving.
"""

from __future__ import annotations


class ThreeDLLMError(Exception):
    """Base class of every error this package raises on purpose."""


class MessageFormatError(ThreeDLLMError, ValueError):
    """A sensor message cannot be decoded; ``field`` names the offending message field."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class PointCloudFormatError(MessageFormatError):
    """A PointCloud2 is malformed (data length, missing x/y/z, unknown datatype, ...)."""


class ImageEncodingError(MessageFormatError):
    """An Image has an unsupported encoding or an inconsistent step/size."""


class CameraInfoError(MessageFormatError):
    """A CameraInfo cannot give usable intrinsics (zero K, zero size, ...)."""


class FrameTooSparseError(MessageFormatError):
    """A sensor frame holds too few valid points to say anything about the scene."""


class ConfigError(ThreeDLLMError, ValueError):
    """A configuration value is wrong; the message names the parameter and the fix."""

    def __init__(self, parameter: str, problem: str, fix: str) -> None:
        self.parameter = parameter
        self.problem = problem
        self.fix = fix
        super().__init__(f"parameter '{parameter}': {problem}. Fix: {fix}")


class ModelFileError(ThreeDLLMError, FileNotFoundError):
    """A model file (checkpoint, GGUF, ONNX) is missing or unreadable."""
