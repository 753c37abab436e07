"""`make demo`: the full graph — simulated camera, threed_llm_node, mono3d_node — asked over DDS.

1. Starts ``threed-llm up --config config/demo.yaml`` in the background (each node its own
   process) with the trained checkpoint ``models/threed-llm-mini`` if it exists, else an
   UNTRAINED model built once into the cache (said loudly: its answers mean nothing).
2. Reads the simulator's ground truth (``/camera/ground_truth/markers``) and asks, through
   :class:`~threed_llm_ros.ros.prompt_client.PromptClient`: "Describe the scene.",
   "Where is the <colour> <category>?" and "Bring the <object> to the <furniture>.",
   printing each reply once, as it streams, then its status, latency and poses with their frame.
   Then asks ``mono3d_node`` (namespace /mono3d) "Where is the <furniture>?", answered from the
   RGB image and camera_info alone (no depth, no point cloud; ``models/mono3d``).
3. Writes ``demo_out/``: ``topdown.png`` (points seen from above, ground-truth boxes,
   found boxes with their confidence, the plan's path; labels placed so that none overlaps
   another), ``replies.json`` (answers, statuses, latencies, poses with their frame), ``mono3d_reply.json``
   (the RGB-only answer, its latency and pose), the
   nodes' logs and ``recording/`` (an MCAP recording, ROS 2 CDR: the prompts, the node's
   outputs and the camera frame each reply answered; open ``recording/recording.mcap`` in
   Foxglove with config/foxglove_layout.json, or ``ros2 bag play demo_out/recording``), then
   stops the graph and exits.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from threed_llm_ros.bags import McapRecording
from threed_llm_ros.geometry.frames import to_gravity_frame
from threed_llm_ros.resources import config_path, models_directory
from threed_llm_ros.ros.bag_record import LATCHED_QOS, Recorder
from threed_llm_ros.ros.conversions import pointcloud2_to_arrays
from threed_llm_ros.ros.markers import marker_box
from threed_llm_ros.ros.prompt_client import LATCHED, PromptClient, Reply, print_reply

UP_AXIS = "-y"
MONO3D_NAMESPACE = "/mono3d"  # config/demo.yaml's mono3d_node
PORTABLE = ("cup", "bottle", "book", "box", "lamp", "monitor")
# The simulated camera's topics, recorded with each reply: topic -> (type, QoS).
CAMERA_TOPICS: dict[str, tuple[str, Any]] = {
    "/camera/points": ("sensor_msgs/msg/PointCloud2", qos_profile_sensor_data),
    "/camera/color/image_raw": ("sensor_msgs/msg/Image", qos_profile_sensor_data),
    "/camera/depth/image_raw": ("sensor_msgs/msg/Image", qos_profile_sensor_data),
    "/camera/color/camera_info": ("sensor_msgs/msg/CameraInfo", qos_profile_sensor_data),
    "/camera/ground_truth/markers": ("visualization_msgs/msg/MarkerArray", LATCHED_QOS),
}
FURNITURE = ("table", "desk", "sofa", "bed", "dresser", "cabinet", "night stand", "chair", "bookshelf")


def choose_checkpoint() -> Path:
    """The trained default if present, else an untrained one built into the cache (announced)."""
    trained = models_directory() / "threed-llm-mini"
    if (trained / "config.json").is_file():
        print(f"checkpoint: {trained} (trained default)")
        return trained
    from threed_llm_ros.model.language_model import cache_root
    from threed_llm_ros.runtime.engine_settings import build_untrained_checkpoint

    target = cache_root() / "untrained-threed-llm-mini"
    print("=" * 78)
    print("NO TRAINED CHECKPOINT at models/threed-llm-mini: the demo uses an UNTRAINED model")
    print(f"({target}). The graph, timings and message flow are real; the answers are not.")
    print("=" * 78, flush=True)
    return build_untrained_checkpoint(target)


def _marker_boxes(markers: MarkerArray | None) -> list[tuple[str, np.ndarray, tuple[float, float, float], float]]:
    """(label, gravity centre, size, yaw) of each CUBE with the TEXT of the same id."""
    if markers is None:
        return []
    texts = {(m.ns.removesuffix("_labels"), m.id): m.text for m in markers.markers if m.type == Marker.TEXT_VIEW_FACING}
    boxes = []
    for marker in markers.markers:
        if marker.type != Marker.CUBE:
            continue
        box = marker_box(marker, UP_AXIS)
        boxes.append((texts.get((marker.ns, marker.id), ""), np.asarray(box.center), box.size, box.yaw))
    return boxes


def _portable_and_furniture(ground_truth: MarkerArray) -> tuple[str, str]:
    """A portable object's and a piece of furniture's "<colour> <category>" from the ground truth."""
    labels = [label for label, *_ in _marker_boxes(ground_truth) if label]
    # prefer objects whose "<colour> <category>" is unique in the scene, so each prompt names one object
    labels = sorted(labels, key=lambda label: labels.count(label) > 1)
    portable = next((label for label in labels if label.split(" ", 1)[-1] in PORTABLE), labels[0] if labels else "cup")
    furniture = next((label for label in labels if label.split(" ", 1)[-1] in FURNITURE and label != portable),
                     labels[-1] if labels else "table")
    return portable, furniture


def choose_prompts(ground_truth: MarkerArray) -> list[str]:
    portable, furniture = _portable_and_furniture(ground_truth)
    return ["Describe the scene.", f"Where is the {portable}?", f"Bring the {portable} to the {furniture}."]


def choose_image_prompt(ground_truth: MarkerArray) -> str:
    """The question for mono3d_node: a piece of furniture (large enough to measure from one image)."""
    return f"Where is the {_portable_and_furniture(ground_truth)[1]}?"


def ask_mono3d(client: PromptClient, prompt: str, timeout_s: float, active: Any) -> dict[str, Any] | None:
    """Ask mono3d_node over its prompt/answer topics (after it is active); the reply as a record, None
    (said) if it does not come up or answer in time."""
    from geometry_msgs.msg import PoseStamped
    from std_msgs.msg import String

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    answers: list[str] = []
    poses: list[PoseStamped] = []
    publisher = client.create_publisher(String, f"{MONO3D_NAMESPACE}/prompt", reliable)
    client.create_subscription(String, f"{MONO3D_NAMESPACE}/answer", lambda m: answers.append(m.data), reliable)
    client.create_subscription(PoseStamped, f"{MONO3D_NAMESPACE}/grounding/target_pose", poses.append, reliable)
    deadline = time.monotonic() + timeout_s
    while not (active() and publisher.get_subscription_count()):
        if time.monotonic() > deadline:
            print("mono3d_node did not come up in time; see its log", file=sys.stderr)
            return None
        rclpy.spin_once(client, timeout_sec=0.1)
    print(f"\n>>> [mono3d_node, RGB image + camera_info only] {prompt}", flush=True)
    started = time.monotonic()
    publisher.publish(String(data=prompt))
    while not answers:
        if time.monotonic() > deadline:
            print("mono3d_node did not answer in time", file=sys.stderr)
            return None
        rclpy.spin_once(client, timeout_sec=0.1)
    latency = time.monotonic() - started
    pose_deadline = time.monotonic() + 2.0  # the pose is a separate topic: it may arrive just after the answer
    while not poses and not answers[0].startswith("I don't see") and time.monotonic() < pose_deadline:
        rclpy.spin_once(client, timeout_sec=0.05)
    record: dict[str, Any] = {"prompt": prompt, "answer": answers[0], "latency_s": round(latency, 3)}
    if poses:
        pose = poses[-1]
        record["target_pose"] = {"frame_id": pose.header.frame_id,
                                 "position": [pose.pose.position.x, pose.pose.position.y, pose.pose.position.z]}
    print(f"{answers[0]}\n  ({latency:.2f} s)", flush=True)
    return record


def _footprint(centre: np.ndarray, size: tuple[float, float, float], yaw: float) -> np.ndarray:
    half_length, half_width = size[0] / 2, size[1] / 2
    corners = np.array([[half_length, half_width], [-half_length, half_width], [-half_length, -half_width],
                        [half_length, -half_width], [half_length, half_width]])
    c, s = math.cos(yaw), math.sin(yaw)
    return corners @ np.array([[c, s], [-s, c]]) + centre[:2]


# label offsets tried in turn, in points from the anchor: on it, then above/below, then further out and aside
LABEL_OFFSETS = [(0, 0)] + [(dx, sign * dy) for dy in range(9, 100, 9) for sign in (1, -1) for dx in (0, -60, 60)]


def _text_extent(artist: Any, renderer: Any) -> Any:
    """The window extent of a label's text alone (an annotation's own extent includes its leader line)."""
    from matplotlib.text import Text

    artist.update_positions(renderer)  # an annotation places its text only when drawn or asked to
    return Text.get_window_extent(artist, renderer)


def place_labels(axes: Any, labels: list[tuple[float, float, str, str]]) -> list[Any]:
    """Draw each (x, y, text, colour) label at the first offset where it overlaps no label drawn before,
    with a thin line back to its anchor when moved; returns the text artists."""
    figure = axes.figure
    figure.canvas.draw()  # a renderer, so text extents are known
    renderer = figure.canvas.get_renderer()
    placed: list[Any] = []
    artists = []
    for x, y, text, colour in labels:
        artist = None
        for dx, dy in LABEL_OFFSETS:
            if artist is not None:
                artist.remove()
            artist = axes.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, color=colour,
                                   ha="center", va="center",
                                   arrowprops=None if (dx, dy) == (0, 0) else {"arrowstyle": "-", "color": colour,
                                                                                 "linewidth": 0.5})
            box = _text_extent(artist, renderer).expanded(1.05, 1.2)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(_text_extent(artist, renderer))
        artists.append(artist)
    return artists


def save_topdown(path: Path, points: np.ndarray | None, ground_truth: MarkerArray | None, replies: list[Reply]) -> None:
    """Top-down view (x forward up the page, y left to the left): points, GT boxes, predictions, plan path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 8))
    if points is not None and len(points):
        gravity = to_gravity_frame(points[:: max(1, len(points) // 30000)].astype(np.float64), UP_AXIS)
        axes.scatter(-gravity[:, 1], gravity[:, 0], s=0.3, c=gravity[:, 2], cmap="viridis", alpha=0.5)
    labels: list[tuple[float, float, str, str]] = []
    for label, centre, size, yaw in _marker_boxes(ground_truth):
        outline = _footprint(centre, size, yaw)
        axes.plot(-outline[:, 1], outline[:, 0], color="black", linewidth=1)
        labels.append((-centre[1], centre[0], label, "black"))
    drawn: set[tuple[str, tuple[float, ...]]] = set()
    for reply in replies:
        for label, centre, size, yaw in _marker_boxes(reply.markers):
            key = (label, tuple(np.round(centre, 2)))
            if key in drawn:  # the same object found by two replies (a find, then a plan): one box, one label
                continue
            drawn.add(key)
            outline = _footprint(centre, size, yaw)
            axes.plot(-outline[:, 1], outline[:, 0], color="red", linewidth=1.5, linestyle="--")
            labels.append((-centre[1], centre[0], f"found: {label}", "red"))
        if reply.path is not None and reply.path.poses:
            goals = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in reply.path.poses])
            goals = to_gravity_frame(goals, UP_AXIS)
            route = np.vstack([[0.0, 0.0, 0.0], goals])
            axes.plot(-route[:, 1], route[:, 0], color="blue", marker="o", linewidth=1.5, label="plan path")
    axes.plot([0], [0], marker="^", color="black", markersize=10, label="camera")
    axes.set_xlabel("left  ←  (m, -y)  →  right")
    axes.set_ylabel("x forward (m)")
    axes.set_aspect("equal")
    frame = replies[0].frame_id if replies and replies[0].frame_id else "the camera's frame"
    axes.set_title(f"seen from above, gravity-aligned, origin at the camera ({frame})\n"
                   "black: ground truth   red dashed: found (object-layer confidence)   blue: plan path", fontsize=9)
    axes.legend(loc="lower right")
    place_labels(axes, labels)  # last: the axes' limits are final, so the overlap test holds in the saved image
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _show_progress(log: Path, shown: str) -> str:
    """Print the node's newest log line (what it is loading) when it changed; returns the line shown."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if "] [threed_llm_node]: " in line]
    except OSError:
        return shown
    if lines and lines[-1] != shown:
        print("  node:", lines[-1].split("]: ", 1)[-1], flush=True)
        return lines[-1]
    return shown


def reply_record(reply: Reply) -> dict[str, Any]:
    """One reply for replies.json: the prompt, the answer, how it went, and any pose with its frame."""
    record: dict[str, Any] = {"prompt": reply.prompt, "answer": reply.answer, "intent": reply.intent,
                              "status": reply.status, "latency_s": round(reply.latency_s, 3),
                              "frame_id": reply.frame_id}
    if reply.target_pose is not None:
        position, orientation = reply.target_pose.pose.position, reply.target_pose.pose.orientation
        record["target_pose"] = {"frame_id": reply.target_pose.header.frame_id,
                                 "position": [position.x, position.y, position.z],
                                 "orientation_xyzw": [orientation.x, orientation.y, orientation.z, orientation.w]}
    if reply.plan is not None:
        record["plan"] = reply.plan
    return record


def _stop(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    """``make demo``: start the graph, wait for it, ask, draw, record and stop (see the module docstring).

    Length: the demo's script in the order a user watches it, with its waits and its clean-up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("demo_out"))
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for each answer")
    arguments = parser.parse_args(argv)
    arguments.output.mkdir(parents=True, exist_ok=True)
    checkpoint = choose_checkpoint()
    command = [sys.executable, "-m", "threed_llm_ros.up", "--config", str(config_path("demo.yaml")),
               "--param", f"threed_llm_node.checkpoint={checkpoint}", "--log-dir", str(arguments.output / "logs")]
    print("starting:", " ".join(command[1:]), flush=True)
    graph = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    rclpy.init()
    client = PromptClient("demo_prompt_client")
    state: dict[str, Any] = {"points": None, "ground_truth": None, "active": False, "mono3d_active": False}
    client.create_subscription(PointCloud2, "/camera/points", lambda m: state.__setitem__("points", m), qos_profile_sensor_data)
    client.create_subscription(MarkerArray, "/camera/ground_truth/markers", lambda m: state.__setitem__("ground_truth", m), LATCHED)

    def on_diagnostics(message: DiagnosticArray) -> None:
        for status in message.status:
            active = any(v.key == "state" and v.value == "active" for v in status.values)
            if status.name.startswith("threed_llm_node") and active:
                state["active"] = True
            if status.name.startswith("mono3d_node") and active:
                state["mono3d_active"] = True

    client.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    replies: list[Reply] = []
    shutil.rmtree(arguments.output / "recording", ignore_errors=True)  # this demo's own previous recording
    recorder = Recorder(McapRecording(arguments.output / "recording"),
                        {topic: msgtype for topic, (msgtype, _) in CAMERA_TOPICS.items()},
                        subscribe={topic: qos for topic, (_, qos) in CAMERA_TOPICS.items()})
    try:
        deadline = time.monotonic() + 300
        node_log = arguments.output / "logs" / "threed_llm_node.log"
        print(f"waiting for threed_llm_node to load and warm up (its log: {node_log}):", flush=True)
        shown = ""
        while not (state["active"] and state["ground_truth"] is not None and state["points"] is not None):
            if graph.poll() is not None or time.monotonic() > deadline:
                print(f"the graph did not come up; see {arguments.output / 'logs'}", file=sys.stderr)
                return 1
            rclpy.spin_once(client, timeout_sec=0.2)
            shown = _show_progress(node_log, shown)
        print("graph is up: scene_sim_node -> /camera/points -> threed_llm_node (active)", flush=True)
        for prompt in choose_prompts(state["ground_truth"]):
            recorder.prompt(prompt)
            print(f"\n>>> {prompt}", flush=True)
            reply = client.ask(prompt, arguments.timeout, on_piece=lambda piece: print(piece, end="", flush=True))
            print_reply(reply, prompt, streamed=True)  # the rest of the text (if any), status, latency, poses
            if reply is not None:
                recorder.answer(reply.answer)
                replies.append(reply)
        image_reply = ask_mono3d(client, choose_image_prompt(state["ground_truth"]), 60.0,
                                 lambda: state["mono3d_active"])
        (arguments.output / "mono3d_reply.json").write_text(json.dumps(image_reply, indent=2) + "\n")
        cloud = pointcloud2_to_arrays(state["points"]).xyz
        save_topdown(arguments.output / "topdown.png", cloud, state["ground_truth"], replies)
        (arguments.output / "replies.json").write_text(json.dumps([reply_record(reply) for reply in replies],
                                                                  indent=2) + "\n")
        print(f"\nwrote {arguments.output / 'topdown.png'} (open it in any image viewer), "
              f"{arguments.output / 'replies.json'}, the nodes' logs in {arguments.output / 'logs'}/ and "
              f"{recorder.recording.mcap_path} (Foxglove, or `ros2 bag play {recorder.recording.directory}`)")
        return 0 if len(replies) == 3 and image_reply is not None else 1
    except KeyboardInterrupt:
        return 130
    finally:
        recorder.close()
        client.destroy_node()
        rclpy.try_shutdown()
        _stop(graph)


if __name__ == "__main__":
    sys.exit(main())
