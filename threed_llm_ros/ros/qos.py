"""Quality-of-service profiles shared by the nodes, settable through parameters.

Sensor streams use sensor-data QoS: keep-last with a short queue and, by default, best
effort, so a slow subscriber drops stale frames instead of building a queue. Some
recorders and bridges need reliable delivery, hence the ``qos_reliability`` parameter.
Slow-changing results (ground-truth or grounding markers) use reliable, transient-local
delivery so a viewer that starts late still gets the latest one.
"""

from __future__ import annotations

import os
from pathlib import Path

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from threed_llm_ros.errors import ConfigError, ModelFileError
from threed_llm_ros.resources import config_path
from threed_llm_ros.ros.parameters import ParameterSpec

FASTDDS_PROFILES_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
LARGE_DATA_PROFILE = "fastdds_large_data.xml"

RELIABILITY_CHOICES: tuple[str, ...] = ("best_effort", "reliable")
_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
MAX_QUEUE_DEPTH = 1000


def sensor_qos(
    reliability: str = "best_effort",
    depth: int = 5,
    *,
    reliability_parameter: str = "qos_reliability",
    depth_parameter: str = "qos_depth",
) -> QoSProfile:
    """Keep-last, volatile profile for sensor topics; bad values raise ConfigError naming the parameter."""
    if reliability not in _RELIABILITY:
        raise ConfigError(reliability_parameter, f"got {reliability!r}", f"use one of {list(RELIABILITY_CHOICES)}")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_QUEUE_DEPTH:
        raise ConfigError(depth_parameter, f"got {depth!r}", f"use a queue depth between 1 and {MAX_QUEUE_DEPTH}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=_RELIABILITY[reliability],
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos(depth: int = 1) -> QoSProfile:
    """Reliable, transient-local profile: late subscribers receive the last ``depth`` messages."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def qos_parameter_specs(
    default_reliability: str = "best_effort", default_depth: int = 5, *, prefix: str = "qos_"
) -> list[ParameterSpec]:
    """The ``qos_reliability`` / ``qos_depth`` parameter specs a sensor node declares."""
    return [
        ParameterSpec(
            f"{prefix}reliability",
            default_reliability,
            "Reliability of the sensor topics: best_effort (sensor-data QoS, drops stale frames) or reliable.",
            choices=RELIABILITY_CHOICES,
        ),
        ParameterSpec(
            f"{prefix}depth", default_depth, "Queue depth (keep last N) of the sensor topics.", 1, MAX_QUEUE_DEPTH
        ),
    ]


def use_large_message_transport(profile: Path | None = None) -> Path | None:
    """Let Fast DDS carry large messages through shared memory; call before ``rclpy.init``.

    With Fast DDS's default 512 KB shared-memory segment, a 640x480 image or cloud falls
    back to fragmented UDP, where best-effort delivery loses most messages. This points
    ``FASTDDS_DEFAULT_PROFILES_FILE`` at the package's profile (64 MB segment) unless a
    profile is already set or another RMW is selected. Returns the profile used, or None.
    """
    if any(os.environ.get(variable) for variable in FASTDDS_PROFILES_VARIABLES):
        return None
    if not os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        return None
    if profile is None:
        try:
            profile = config_path(LARGE_DATA_PROFILE)
        except ModelFileError:
            return None
    if not profile.is_file():
        return None
    os.environ[FASTDDS_PROFILES_VARIABLES[0]] = str(profile)
    return profile
