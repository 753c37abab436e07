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

from threed_llm_ros.ros.conversions.camera_info import (
    MAX_FOCAL_PX,
    MIN_FOCAL_PX,
    camera_info_to_intrinsics,
    depth_to_pointcloud2,
    intrinsics_to_camera_info,
)
from threed_llm_ros.ros.conversions.image import (
    DEPTH_ENCODINGS,
    IMAGE_ENCODINGS,
    array_to_image,
    depth_image_to_metres,
    depth_metres_to_image,
    image_to_array,
    image_to_rgb,
)
from threed_llm_ros.ros.conversions.messages import stamp_to_tuple, tuple_to_stamp
from threed_llm_ros.ros.conversions.pointcloud import (
    RGB_LAYOUTS,
    CloudArrays,
    arrays_to_pointcloud2,
    pointcloud2_to_arrays,
)

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
    "MIN_FOCAL_PX",
    "MAX_FOCAL_PX",
]
