"""Grounding markers and their inverse, and the demo's choice of prompts from ground-truth markers."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy")

from visualization_msgs.msg import Marker  # noqa: E402

from threed_llm_ros.data.sim.frames import simulate  # noqa: E402
from threed_llm_ros.geometry.boxes import OrientedBox  # noqa: E402
from threed_llm_ros.geometry.frames import rotation_to_gravity  # noqa: E402
from threed_llm_ros.geometry.iou import rotated_box_iou  # noqa: E402
from threed_llm_ros.ros.demo import choose_prompts  # noqa: E402
from threed_llm_ros.ros.markers import grounding_markers, marker_box  # noqa: E402
from threed_llm_ros.ros.scene_sim_node import ground_truth_markers  # noqa: E402
from threed_llm_ros.runtime.replies import GroundedObject  # noqa: E402

pytestmark = pytest.mark.ros


def _grounded(box: OrientedBox, label: str, up_axis: str) -> GroundedObject:
    position, orientation = box.pose_in_frame(up_axis)
    up = tuple(float(v) for v in rotation_to_gravity(up_axis)[2])
    return GroundedObject(label, 0.5, box, tuple(position), tuple(orientation), "objects", up)


@pytest.mark.parametrize("up_axis", ["-y", "z"])
@pytest.mark.parametrize("yaw", [0.0, 0.7, -2.9])
def test_marker_box_inverts_grounding_markers(up_axis: str, yaw: float) -> None:
    box = OrientedBox((2.0, -0.5, 0.4), (0.8, 0.3, 0.6), yaw)
    markers = grounding_markers([_grounded(box, "red chair", up_axis)], "camera", (1, 2)).markers
    assert markers[0].action == Marker.DELETEALL
    recovered = marker_box(markers[1], up_axis)
    assert np.allclose(recovered.center, box.center, atol=1e-9)
    assert np.allclose(recovered.size, box.size)
    assert abs(math.remainder(recovered.yaw - yaw, 2 * math.pi)) < 1e-9


def test_marker_box_reads_the_simulators_ground_truth_markers() -> None:
    frame = simulate(101)
    cubes = [m for m in ground_truth_markers(frame, "camera").markers if m.type == Marker.CUBE]
    assert len(cubes) == len(frame.objects)
    for marker, obj in zip(cubes, frame.objects):
        assert rotated_box_iou(marker_box(marker, "-y"), obj.box) > 0.999


def test_demo_prompts_name_objects_whose_label_is_unique() -> None:
    frame = simulate(1)  # two "grey book"s come before any other small object
    labels = [obj.label for obj in frame.objects]
    prompts = choose_prompts(ground_truth_markers(frame, "camera"))
    asked = prompts[1].removeprefix("Where is the ").removesuffix("?")
    assert labels.count(asked) == 1, (asked, labels)
    assert prompts[2].startswith(f"Bring the {asked} to the ")
    furniture = prompts[2].removeprefix(f"Bring the {asked} to the ").removesuffix(".")
    assert labels.count(furniture) == 1, (furniture, labels)
