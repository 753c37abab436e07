"""``threed-llm eval-real``: the object layer on real sensor frames, with PNG overlays to look at.

Frames (``../shared/realdata``, decoded as its SOURCES.md says):

* SUN RGB-D 000001 (labelled; IoU of the best confident object and its name, and "any":
  of any object in the list, confident or not, e.g. an ottoman, which no category names): given as the camera's optical-frame cloud (the robot's
  case, ``up_axis -y``, the camera pitched down), as the upright cloud (``z``) and as the
  upright cloud turned about the vertical by several angles, each with the camera image and
  the transform into its optical frame (as tf gives a robot), and once without the image
  (``optical_no_image``: depth and colour points alone). Per labelled object: the best
  3D IoU of a confident detection and its category; the bed count and lamp existence as a
  robot would be answered; which confident objects of a labelled category lie more than
  0.5 m from every labelled one of that category (invented objects).
* PCL office1, TUM, NYU and PCL's Kinect frame: unlabelled, for plausibility: do the boxes
  projected into the image sit on the named objects? Look at the PNGs.

Writes ``OUTPUT/realdata.json``, ``OUTPUT/realdata.md`` and ``OUTPUT/*.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from threed_llm_ros.data.dataset import _SUNRGBD_TO_BODY, convert_sunrgbd_sample
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.camera import CameraIntrinsics, depth_to_points, project_points
from threed_llm_ros.geometry.frames import yaw_rotation
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.objects.layer import ObjectLayer, PerceptionSettings, SceneObjects
from threed_llm_ros.resources import default_object_classifier

_OPTICAL_FROM_UPRIGHT_CAMERA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
SUN_FOUND_CATEGORIES = ("bed", "dresser", "ottoman")
SUN_SMALL_CATEGORIES = ("night stand", "lamp")
INVENTED_DISTANCE_M = 0.5
ROTATIONS_DEG = (0, 45, 90, 135, 180, 270)


@dataclass
class RealFrame:
    """One real frame: optical-frame points and colours, its image and intrinsics."""

    name: str
    points: np.ndarray  # (N, 3) optical frame
    colors: np.ndarray | None  # (N, 3) uint8
    image: np.ndarray
    intrinsics: CameraIntrinsics


def transform_box(box: OrientedBox, rotation: np.ndarray) -> OrientedBox:
    """``box`` in a frame reached by ``rotation`` (a turn about z, up to the floor's small tilt)."""
    centre = rotation @ np.asarray(box.center)
    turn = math.atan2(rotation[1, 0], rotation[0, 0])
    return OrientedBox(tuple(centre.tolist()), box.size, float(box.yaw + turn))


# ------------------------------------------------------------------ loading real frames


def sun_frame(root: Path) -> tuple[RealFrame, object, np.ndarray]:
    """SUN RGB-D 000001: the optical-frame frame, its labelled record (REP-103 body frame) and
    the rotation from the optical frame to that body frame."""
    from PIL import Image

    sun = root / "sunrgbd_mmdet3d"
    record = convert_sunrgbd_sample(sun / "label" / "000001.txt", sun / "lidar" / "000001.npz", room_type="bedroom")
    values = [float(v) for v in (sun / "calib" / "000001.txt").read_text().split()]
    tilt = np.array(values[:9]).reshape(3, 3).T  # column-major
    k = np.array(values[9:18]).reshape(3, 3).T
    image = np.asarray(Image.open(sun / "image" / "000001.jpg").convert("RGB"))
    upright = record.points.astype(np.float64) @ _SUNRGBD_TO_BODY  # body → upright depth (x right, y forward)
    optical = (upright @ tilt) @ _OPTICAL_FROM_UPRIGHT_CAMERA.T
    body_from_optical = _SUNRGBD_TO_BODY @ tilt @ _OPTICAL_FROM_UPRIGHT_CAMERA.T
    intrinsics = CameraIntrinsics(fx=k[0, 0], fy=k[1, 1], cx=k[0, 2], cy=k[1, 2], width=image.shape[1], height=image.shape[0])
    frame = RealFrame("sunrgbd_000001", optical.astype(np.float32), record.colors, image, intrinsics)
    return frame, record, body_from_optical


def unlabelled_frames(root: Path) -> list[RealFrame]:
    """The unlabelled real frames, each as an optical-frame cloud with its image."""
    import open3d
    from PIL import Image

    frames = []
    primesense = CameraIntrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=640, height=480)
    for name in ("office1", "table_scene_mug_stereo_textured"):
        cloud = open3d.io.read_point_cloud(str(root / "pcl" / f"{name}.pcd"))
        points = np.asarray(cloud.points)
        colors = (np.asarray(cloud.colors) * 255).astype(np.uint8) if cloud.has_colors() else np.zeros((len(points), 3), np.uint8)
        image = colors.reshape(480, 640, 3) if len(points) == 640 * 480 else np.zeros((480, 640, 3), np.uint8)
        valid = np.isfinite(points).all(axis=1)
        frames.append(RealFrame(f"pcl_{name}", points[valid].astype(np.float32), colors[valid], image,
                                CameraIntrinsics(fx=525.0, fy=525.0, cx=320.0, cy=240.0, width=640, height=480)))
    single = root / "open3d" / "real_single_frames"
    tum_depth = np.asarray(Image.open(single / "TUM_depth.png"), dtype=np.float64) / 5000.0
    tum_rgb = np.asarray(Image.open(single / "TUM_color.png").convert("RGB"))
    points, colors = depth_to_points(np.where(tum_depth > 0, tum_depth, np.nan).astype(np.float32), primesense, color=tum_rgb)
    frames.append(RealFrame("tum", points, colors, tum_rgb, primesense))
    raw = np.frombuffer((single / "NYU_depth.pgm").read_bytes()[-640 * 480 * 2:], dtype="<u2").reshape(480, 640).astype(np.float64)
    nyu_depth = np.where(raw < 2047, 351.3 / np.maximum(1092.5 - raw, 1e-3), np.nan)
    nyu_depth = np.where((nyu_depth > 0.3) & (nyu_depth < 10.0), nyu_depth, np.nan)
    nyu_rgb = np.asarray(Image.open(single / "NYU_color.ppm").convert("RGB"))
    nyu = CameraIntrinsics(fx=582.62, fy=582.69, cx=313.04, cy=238.44, width=640, height=480)
    points, colors = depth_to_points(nyu_depth.astype(np.float32), nyu, color=nyu_rgb)
    frames.append(RealFrame("nyu", points, colors, nyu_rgb, nyu))
    return frames


# ------------------------------------------------------------------ scoring and pictures


def score_sun(found: SceneObjects, record, to_body: np.ndarray) -> dict:
    """Per labelled object: the best IoU of a confident detection (and its category); the bed
    count, lamp existence and invented objects (see the module docstring)."""
    detections = [(obj, transform_box(obj.box, to_body)) for obj in found.confident]
    every = [(obj, transform_box(obj.box, to_body)) for obj in found.objects]
    per_object = []
    for truth in record.objects:
        ious = [(rotated_box_iou(box, truth.box), obj.category) for obj, box in detections]
        best = max(ious, default=(0.0, ""))
        any_iou = max((rotated_box_iou(box, truth.box) for _, box in every), default=0.0)
        same = [float(np.linalg.norm(np.subtract(box.center, truth.box.center))) for obj, box in detections
                if obj.category == truth.category]
        per_object.append({"category": truth.category, "best_iou": round(best[0], 3), "matched_as": best[1],
                           "best_iou_any_object": round(any_iou, 3),
                           "nearest_same_category_m": round(min(same), 3) if same else None})
    labelled = {truth.category for truth in record.objects}
    invented = []
    for obj, box in detections:
        if obj.category in labelled:
            distance = min(float(np.linalg.norm(np.subtract(box.center[:2], truth.box.center[:2])))
                           for truth in record.objects if truth.category == obj.category)
            if distance > INVENTED_DISTANCE_M and obj.category in SUN_SMALL_CATEGORIES:
                invented.append({"category": obj.category, "distance_m": round(distance, 3)})
        elif obj.category not in ("book", "box", "cabinet", "table", "chair", "sofa", "desk", "bookshelf"):
            invented.append({"category": obj.category, "distance_m": None})
    by_category = {entry["category"]: entry for entry in per_object}
    return {
        "objects": per_object,
        "found_iou_0.25": {name: by_category[name]["best_iou"] >= 0.25 for name in SUN_FOUND_CATEGORIES},
        "boxed_iou_0.25": {name: by_category[name]["best_iou_any_object"] >= 0.25 for name in SUN_FOUND_CATEGORIES},
        "bed_count": sum(obj.category == "bed" for obj, _ in detections),
        "lamp_seen": any(obj.category == "lamp" for obj, _ in detections),
        "invented": invented,
        "detections": [{"category": obj.category, "score": round(obj.score, 3), "color": obj.color,
                        "center_body": [round(v, 3) for v in box.center], "size": [round(v, 3) for v in box.size]}
                       for obj, box in detections],
    }


def draw_overlay(frame: RealFrame, found: SceneObjects, path: Path, truth: list[OrientedBox] | None = None,
                 truth_to_optical: np.ndarray | None = None, camera_from_input: np.ndarray | None = None) -> None:
    """The image with every object's box projected (confident: solid; others: dashed), and
    the labelled boxes in green where given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    to_optical = found.gravity.rotation.T if camera_from_input is None else camera_from_input[:3, :3] @ found.gravity.rotation.T
    figure, axes = plt.subplots(figsize=(frame.image.shape[1] / 80, frame.image.shape[0] / 80), dpi=80)
    axes.imshow(frame.image)
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]

    def wire(corners_optical: np.ndarray, color: str, style: str, label: str) -> None:
        uv, front = project_points(corners_optical, frame.intrinsics)
        if not front.all():
            return
        for a, b in edges:
            axes.plot(uv[[a, b], 0], uv[[a, b], 1], style, color=color, linewidth=1.5)
        if label:
            top = uv[4:].mean(axis=0)
            axes.text(top[0], top[1], label, color="white", fontsize=8, bbox={"facecolor": color, "alpha": 0.7, "pad": 1})

    for box in truth or []:
        wire(box.corners() @ truth_to_optical.T, "lime", "-", "")
    for obj in found.objects:
        confident = obj.score >= found.min_confidence
        wire(obj.box.corners() @ to_optical.T, "red" if confident else "orange", "-" if confident else ":",
             f"{obj.category} {obj.score:.2f}" if confident else "")
    axes.set_xlim(0, frame.image.shape[1])
    axes.set_ylim(frame.image.shape[0], 0)
    axes.axis("off")
    figure.tight_layout(pad=0)
    figure.savefig(path)
    plt.close(figure)


def evaluate_real(layer: ObjectLayer, root: Path, output: Path) -> dict:
    """Run every check of the module docstring; write the JSON, Markdown and PNGs."""
    output.mkdir(parents=True, exist_ok=True)
    frame, record, body_from_optical = sun_frame(root)
    results: dict = {"sunrgbd_000001": {}}
    optical_layer = layer.with_settings(PerceptionSettings(up_axis="-y"))
    upright_layer = layer.with_settings(PerceptionSettings(up_axis="z"))
    found = optical_layer.perceive(frame.points, frame.colors, frame.name)
    results["sunrgbd_000001"]["optical_no_image"] = score_sun(found, record, body_from_optical @ found.gravity.rotation.T)
    draw_overlay(frame, found, output / "sunrgbd_000001_no_image.png", [obj.box for obj in record.objects], body_from_optical.T)
    found = optical_layer.perceive(frame.points, frame.colors, frame.name, image=frame.image, intrinsics=frame.intrinsics)
    results["sunrgbd_000001"]["optical"] = score_sun(found, record, body_from_optical @ found.gravity.rotation.T)
    results["sunrgbd_000001"]["timings"] = {key: round(value, 3) for key, value in found.timings.items()}
    draw_overlay(frame, found, output / "sunrgbd_000001.png", [obj.box for obj in record.objects], body_from_optical.T)
    for degrees in ROTATIONS_DEG:
        turn = yaw_rotation(math.radians(degrees))
        turned = record.points.astype(np.float64) @ turn.T
        camera_from_input = np.eye(4)  # the turned cloud's frame → the camera's optical frame
        camera_from_input[:3, :3] = body_from_optical.T @ turn.T
        found = upright_layer.perceive(turned, record.colors, f"upright_{degrees}", image=frame.image,
                                       intrinsics=frame.intrinsics, camera_from_input=camera_from_input)
        results["sunrgbd_000001"][f"upright_turned_{degrees}"] = score_sun(found, record, turn.T @ found.gravity.rotation.T)
        if degrees == 90:
            draw_overlay(frame, found, output / "sunrgbd_000001_upright_90.png", [obj.box for obj in record.objects],
                         body_from_optical.T, camera_from_input)
    for other in unlabelled_frames(root):
        found = optical_layer.perceive(other.points, other.colors, other.name, image=other.image, intrinsics=other.intrinsics)
        draw_overlay(other, found, output / f"{other.name}.png")
        results[other.name] = {
            "objects": [{"category": obj.category, "score": round(obj.score, 3), "color": obj.color,
                         "size": [round(v, 2) for v in obj.box.size]} for obj in found.confident],
            "floor_found": found.gravity.floor_found,
            "timings": {key: round(value, 3) for key, value in found.timings.items()},
        }
    (output / "realdata.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (output / "realdata.md").write_text(format_real_report(results), encoding="utf-8")
    return results


def format_real_report(results: dict) -> str:
    """A Markdown summary of :func:`evaluate_real`'s results."""
    lines = ["# Real frames: the object layer", "", "## SUN RGB-D 000001 (labelled)", "",
             "| input | " + " | ".join(f"{name} IoU" for name in (*SUN_FOUND_CATEGORIES, *SUN_SMALL_CATEGORIES))
             + " | beds | lamp seen | invented |", "|---" * 8 + "|"]
    for variant, scored in results["sunrgbd_000001"].items():
        if variant == "timings":
            continue
        by_category = {entry["category"]: entry for entry in scored["objects"]}
        cells = [f"{by_category[name]['best_iou']:.2f} ({by_category[name]['matched_as'] or '-'}; "
                 f"any {by_category[name]['best_iou_any_object']:.2f})"
                 for name in (*SUN_FOUND_CATEGORIES, *SUN_SMALL_CATEGORIES)]
        invented = ", ".join(entry["category"] for entry in scored["invented"]) or "none"
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {scored['bed_count']} | {scored['lamp_seen']} | {invented} |")
    lines += ["", "## Unlabelled frames (look at the PNGs)", ""]
    for name, result in results.items():
        if name == "sunrgbd_000001":
            continue
        named = ", ".join(f"{obj['color']} {obj['category']} {obj['score']:.2f}".strip() for obj in result["objects"]) or "nothing"
        lines.append(f"- **{name}** (floor found: {result['floor_found']}): {named}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``threed-llm eval-real --realdata ../shared/realdata --output real_out``."""
    parser = argparse.ArgumentParser(prog="threed-llm eval-real", description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=Path("../shared/realdata"))
    parser.add_argument("--classifier", type=Path, default=None, help="object classifier directory (default: the shipped one)")
    parser.add_argument("--output", type=Path, default=Path("real_out"))
    arguments = parser.parse_args(argv)
    layer = ObjectLayer.load(arguments.classifier or default_object_classifier())
    results = evaluate_real(layer, arguments.realdata, arguments.output)
    print(format_real_report(results))
    print(f"wrote {arguments.output}/realdata.json, realdata.md and the PNG overlays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
