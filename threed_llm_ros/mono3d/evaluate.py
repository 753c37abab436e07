"""Evaluate the single-image grounder: Acc@IoU, depth and size error per field-of-view bucket.

Per referred object of the simulated test split: the rotated 3D IoU of the predicted box with
the true one (Acc@0.25, Acc@0.5 = share of queries at or above), the absolute depth error
(metres and relative) and the mean relative size error, overall and per bucket of the
camera's horizontal field of view (equivalently focal length: 60–75°, 75–90°, 90–105°,
105–120°). The *blind* baseline answers every query with its category's mean box of the
training split (centre in the camera frame, size; yaw 0) without looking at the image.

:func:`sun_rgbd_check` is the real check: SUN RGB-D 000001's image and intrinsics alone
(no depth), the bed asked for, the IoU with the labelled bed.

``threed-llm mono3d-eval --model models/mono3d`` writes ``evaluation.json`` and ``evaluation.md``
next to the checkpoint (or to ``--output``); ``--train-frames`` / ``--test-frames`` pick the
cached splits (the blind baseline averages the training split).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.geometry.frames import rotation_to_gravity
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.mono3d.data import FeatureSet
from threed_llm_ros.mono3d.model import Mono3DConfig, Mono3DGrounder, camera_features, decode_boxes
from threed_llm_ros.mono3d.projection import box_from_center

FOV_BUCKETS_DEG = ((60.0, 75.0), (75.0, 90.0), (90.0, 105.0), (105.0, 120.01))


@torch.no_grad()
def predict_boxes(model: Mono3DGrounder, features: FeatureSet, chunk_frames: int = 32,
                  known_height: bool = True) -> list[OrientedBox]:
    """The model's box for every query of ``features`` (frames in chunks; ``known_height``: given each
    frame's camera height, as the node is from TF)."""
    from threed_llm_ros.mono3d.data import subset
    from threed_llm_ros.mono3d.train import forward_features

    model.eval()
    boxes: list[OrientedBox | None] = [None] * len(features)
    frame_count = features.local.shape[0]
    for start in range(0, frame_count, chunk_frames):
        batch, taken = subset(features, torch.arange(start, min(frame_count, start + chunk_frames)))
        if len(batch) == 0:
            continue
        outputs = forward_features(model, batch, known_height=known_height)
        cameras = [batch.canvas_cameras[i] for i in batch.image_index.tolist()]
        for position, box in zip(taken.tolist(), decode_boxes(outputs, cameras, model.config)):
            boxes[position] = box
    return boxes  # type: ignore[return-value]


@torch.no_grad()
def presence_probabilities(model: Mono3DGrounder, features: FeatureSet, seed: int = 0, per_frame: int = 2,
                           chunk_frames: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Presence probabilities of every referral (present) and of absent-label queries drawn per frame
    with a fixed seed (the same queries on every call)."""
    from threed_llm_ros.mono3d.data import draw_absent_queries, subset
    from threed_llm_ros.mono3d.train import forward_features

    model.eval()
    generator = torch.Generator().manual_seed(seed)
    present, absent = [], []
    frame_count = features.local.shape[0]
    for start in range(0, frame_count, chunk_frames):
        batch, _ = subset(features, torch.arange(start, min(frame_count, start + chunk_frames)))
        queries = draw_absent_queries(batch.visible, generator, per_frame)
        probability = torch.sigmoid(forward_features(model, batch, queries)["presence_logit"]).numpy()
        present.append(probability[:len(batch)])
        absent.append(probability[len(batch):])
    return np.concatenate(present), np.concatenate(absent)


ABSENT_COST = 2.0  # answering for an absent object costs twice a missed present one: a robot drives to it


def calibrate_presence_threshold(present: np.ndarray, absent: np.ndarray) -> float:
    """The presence threshold minimising ABSENT_COST × (absent answered) + (present missed), rates
    over held-out frames (midpoint between neighbouring scores, so it is not tuned to one sample)."""
    scores = np.unique(np.concatenate([present, absent, [0.0, 1.0]]))
    candidates = (scores[:-1] + scores[1:]) / 2
    costs = [ABSENT_COST * float((absent >= t).mean()) + float((present < t).mean()) for t in candidates]
    return float(candidates[int(np.argmin(costs))])


def presence_summary(present: np.ndarray, absent: np.ndarray, threshold: float) -> dict[str, float]:
    """Absent-query "not seen" rate and present-object miss rate at ``threshold``."""
    return {"threshold": round(threshold, 4), "absent_queries": int(absent.size), "present_queries": int(present.size),
            "absent_not_seen_rate": round(float((absent < threshold).mean()), 4),
            "present_miss_rate": round(float((present < threshold).mean()), 4)}


def blind_boxes(test: FeatureSet, train: FeatureSet) -> list[OrientedBox]:
    """Each query answered with its category's mean training box (camera frame), yaw 0."""
    means = {}
    for category in test.category.unique().tolist():
        rows = train.category == category
        if not bool(rows.any()):
            rows = torch.ones_like(train.category, dtype=torch.bool)
        means[category] = (train.targets["center_optical"][rows].mean(0).numpy(),
                           train.targets["size"][rows].mean(0).numpy())
    return [box_from_center(means[c][0], means[c][1], np.array([0.0, 1.0])) for c in test.category.tolist()]


def horizontal_fov_deg(features: FeatureSet) -> np.ndarray:
    """Per query: the horizontal field of view of the camera drawn for its image."""
    cameras = [features.cameras[i] for i in features.image_index.tolist()]
    return np.array([math.degrees(2 * math.atan(k.width / 2 / k.fx)) for k in cameras])


def score(predicted: list[OrientedBox], truth: list[OrientedBox]) -> dict[str, np.ndarray]:
    """Per query: IoU, absolute and relative depth error (forward distance), relative size error."""
    iou = np.array([rotated_box_iou(p, t) for p, t in zip(predicted, truth)])
    depth_true = np.array([t.center[0] for t in truth])  # gravity frame x = optical depth for a level camera
    depth_error = np.abs(np.array([p.center[0] for p in predicted]) - depth_true)
    size_error = np.array([np.mean(np.abs(np.subtract(p.size, t.size)) / np.asarray(t.size))
                           for p, t in zip(predicted, truth)])
    return {"iou": iou, "depth_error_m": depth_error, "depth_error_rel": depth_error / depth_true,
            "size_error_rel": size_error}


def summarise(scores: dict[str, np.ndarray], rows: np.ndarray | None = None) -> dict[str, float]:
    """Acc@0.25, Acc@0.5, mean IoU and mean errors over ``rows`` (all queries by default)."""
    pick = (lambda values: values) if rows is None else (lambda values: values[rows])
    iou = pick(scores["iou"])
    if iou.size == 0:
        return {"queries": 0}
    return {
        "queries": int(iou.size),
        "acc_0.25": round(float((iou >= 0.25).mean()), 4),
        "acc_0.5": round(float((iou >= 0.5).mean()), 4),
        "mean_iou": round(float(iou.mean()), 4),
        "depth_error_m": round(float(pick(scores["depth_error_m"]).mean()), 4),
        "depth_error_rel": round(float(pick(scores["depth_error_rel"]).mean()), 4),
        "size_error_rel": round(float(pick(scores["size_error_rel"]).mean()), 4),
    }


def evaluate(model: Mono3DGrounder, test: FeatureSet, train: FeatureSet, known_height: bool = True) -> dict:
    """The model and the blind baseline on the test split, overall and per FOV bucket (``known_height``:
    the model is given each frame's camera height; the presence output does not use it)."""
    fov = horizontal_fov_deg(test)
    results: dict = {"geometry_projection": model.config.geometry_projection, "known_camera_height": known_height}
    present, absent = presence_probabilities(model, test)
    threshold = model.config.presence_threshold
    results["presence"] = presence_summary(present, absent, threshold)
    predicted = predict_boxes(model, test, known_height=known_height)
    for name, boxes in (("model", predicted), ("blind", blind_boxes(test, train))):
        scores = score(boxes, test.boxes)
        results[name] = {"all": summarise(scores)}
        for low, high in FOV_BUCKETS_DEG:
            results[name][f"fov_{low:.0f}_{min(high, 120):.0f}"] = summarise(scores, (fov >= low) & (fov < high))
    answered = np.where(present >= threshold, score(predicted, test.boxes)["iou"], 0.0)
    results["presence"]["acc_0.25_not_seen_as_miss"] = round(float((answered >= 0.25).mean()), 4)
    return results


def format_metrics(metrics: dict) -> str:
    """A Markdown table of :func:`evaluate`'s results."""
    lines = [f"geometry projection: {metrics['geometry_projection']}; camera height given: "
             f"{metrics.get('known_camera_height', False)}", "",
             "| model | split | queries | Acc@0.25 | Acc@0.5 | mean IoU | depth err (m) | depth err (rel) "
             "| size err (rel) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in ("model", "blind"):
        for split, values in metrics[name].items():
            if not values.get("queries"):
                continue
            lines.append(f"| {name} | {split} | {values['queries']} | {values['acc_0.25']:.3f} | "
                         f"{values['acc_0.5']:.3f} | {values['mean_iou']:.3f} | {values['depth_error_m']:.3f} | "
                         f"{values['depth_error_rel']:.3f} | "
                         f"{values['size_error_rel']:.3f} |")
    presence = metrics.get("presence")
    if presence:
        lines += ["", f"presence (threshold {presence['threshold']:.3f}): absent-query 'not seen' rate "
                  f"{presence['absent_not_seen_rate']:.3f} ({presence['absent_queries']} queries), present-object "
                  f"miss rate {presence['present_miss_rate']:.3f} ({presence['present_queries']}); Acc@0.25 with "
                  f"'not seen' counted as a miss {presence['acc_0.25_not_seen_as_miss']:.3f}"]
    sun = metrics.get("sun_rgbd_000001")
    if sun:
        said = sun.get("skipped") or f"{sun['category']} IoU {sun['iou']:.3f}"
        if "levelled" in sun:
            said += f" (levelled with its known gravity: IoU {sun['levelled']['iou']:.3f})"
        lines += ["", f"SUN RGB-D 000001 from the image alone: {said}"]
    return "\n".join(lines)


@dataclass
class SunSample:
    """SUN RGB-D 000001 as the grounder sees it: the canvas image and camera, the labelled boxes
    (upright body frame) and the rotation from the camera's level gravity frame to that frame."""

    canvas: np.ndarray
    canvas_camera: CameraIntrinsics
    image: np.ndarray  # the image as taken, and its camera
    camera: CameraIntrinsics
    labelled: list[tuple[str, OrientedBox]]
    body_from_level: np.ndarray

    def to_body(self, box: OrientedBox) -> OrientedBox:
        """A predicted box (level camera gravity frame) in the labelled boxes' frame."""
        from threed_llm_ros.eval.realdata import transform_box

        return transform_box(box, self.body_from_level)


def load_sun_sample(realdata: Path, config: Mono3DConfig) -> SunSample:
    """Decode the frame as ``eval.realdata.sun_frame`` does (K and Rtilt column-major); image only."""
    from threed_llm_ros.eval.realdata import sun_frame
    from threed_llm_ros.mono3d.data import image_to_canvas

    frame, record, body_from_optical = sun_frame(realdata)
    canvas, canvas_camera = image_to_canvas(frame.image, frame.intrinsics, config)
    # Predicted boxes are in the gravity frame of a level camera: back to optical, then into the body frame.
    body_from_level = body_from_optical @ rotation_to_gravity("-y").T
    return SunSample(canvas, canvas_camera, frame.image, frame.intrinsics,
                     [(obj.category, obj.box) for obj in record.objects], body_from_level)


def sun_rgbd_check(model: Mono3DGrounder, realdata: Path, category: str = "bed") -> dict:
    """SUN RGB-D 000001 from its image and intrinsics alone: the IoU of the predicted ``category``
    box with the labelled one (the camera's pitch is ignored by the model: it assumes a level camera).
    Under ``levelled``: the same after levelling the image with SUN's known gravity (Rtilt;
    ``projection.level_image``, what the node does with the tilt from TF)."""
    from threed_llm_ros.mono3d.data import image_to_canvas
    from threed_llm_ros.mono3d.image_tokens import FrozenBackbone
    from threed_llm_ros.mono3d.projection import level_image

    sample = load_sun_sample(realdata, model.config)
    backbone = FrozenBackbone()
    truths = [truth for name, truth in sample.labelled if name == category]

    def predict(canvas: np.ndarray, canvas_camera: CameraIntrinsics, to_body: Any) -> dict:
        local, global_ = backbone(torch.as_tensor(canvas, dtype=torch.float32).permute(2, 0, 1)[None])
        with torch.no_grad():
            outputs = model(local, global_, torch.zeros(1, dtype=torch.long),
                            torch.tensor([model.category_index(category)]), torch.tensor([model.color_index(None)]),
                            camera_features([canvas_camera], model.config))
        (box,) = decode_boxes(outputs, [canvas_camera], model.config)
        predicted = to_body(box)
        presence = float(torch.sigmoid(outputs["presence_logit"][0]))
        return {"iou": round(float(max((rotated_box_iou(predicted, t) for t in truths), default=0.0)), 4),
                "presence": round(presence, 4), "seen": presence >= model.config.presence_threshold,
                "predicted": _describe(predicted)}

    result = {"category": category, **predict(sample.canvas, sample.canvas_camera, sample.to_body),
              "labelled": _describe(truths[0]) if truths else None}
    gravity = rotation_to_gravity("-y")
    level_from_optical = gravity.T @ sample.body_from_level @ gravity  # the level camera's gravity frame = body
    levelled, level_camera = level_image(sample.image, sample.camera, level_from_optical)
    result["levelled"] = predict(*image_to_canvas(levelled, level_camera, model.config), lambda box: box)
    return result


def _describe(box: OrientedBox) -> dict:
    return {"center": [round(v, 3) for v in box.center], "size": [round(v, 3) for v in box.size],
            "yaw": round(box.yaw, 3)}


def main(argv: list[str] | None = None) -> int:
    """``threed-llm mono3d-eval``: the simulated test split, the blind baseline and the SUN RGB-D bed."""
    from threed_llm_ros.mono3d.data import TEST_SEED_OFFSET, cache_file
    from threed_llm_ros.mono3d.model import load_model
    from threed_llm_ros.mono3d.train import load_or_build, tilt_suffix

    from threed_llm_ros.mono3d.data import DEFAULT_TEST_FRAMES, DEFAULT_TRAIN_FRAMES

    parser = argparse.ArgumentParser(prog="threed-llm mono3d-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="checkpoint directory (model.safetensors + config.json)")
    parser.add_argument("--train-frames", type=int, default=DEFAULT_TRAIN_FRAMES,
                        help="training frames the blind baseline averages")
    parser.add_argument("--test-frames", type=int, default=DEFAULT_TEST_FRAMES)
    parser.add_argument("--cache", type=Path, default=Path("runs/mono3d_cache"))
    parser.add_argument("--tilt", action="store_true",
                        help="the test split of tilted cameras (pitched 0-30 degrees down, 0.4-1.6 m), levelled")
    parser.add_argument("--fixed-height", action="store_true", help="with --tilt: the pitch only, at 1.2 m")
    parser.add_argument("--camera-height", type=float, default=None, metavar="M",
                        help="render the test split with the camera at this height (m; level, or with --tilt)")
    parser.add_argument("--height-unknown", action="store_true",
                        help="do not give the model each frame's camera height (it then assumes 1.2 m)")
    parser.add_argument("--realdata", type=Path, default=Path("../shared/realdata"))
    parser.add_argument("--output", type=Path, default=None, help="report directory (default: the model's)")
    arguments = parser.parse_args(argv)
    model = load_model(arguments.model)
    train = load_or_build(range(arguments.train_frames), cache_file(arguments.cache, "train", arguments.train_frames),
                          model.config, True)
    split = "test" + tilt_suffix(arguments.tilt, arguments.fixed_height)
    if arguments.camera_height is not None:
        split += f"_h{arguments.camera_height:.2f}"
    test = load_or_build(range(TEST_SEED_OFFSET, TEST_SEED_OFFSET + arguments.test_frames),
                         cache_file(arguments.cache, split, arguments.test_frames), model.config, True,
                         tilt=arguments.tilt, fixed_height=arguments.fixed_height,
                         camera_height_m=arguments.camera_height)
    metrics = evaluate(model, test, train, known_height=not arguments.height_unknown)
    metrics["sun_rgbd_000001"] = real_check_or_reason(model, arguments.realdata)
    output = arguments.output or arguments.model
    output.mkdir(parents=True, exist_ok=True)
    (output / "evaluation.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (output / "evaluation.md").write_text(format_metrics(metrics) + "\n", encoding="utf-8")
    print(format_metrics(metrics))
    return 0


def real_check_or_reason(model: Mono3DGrounder, realdata: Path) -> dict:
    """:func:`sun_rgbd_check`, or why it could not run (no real data here)."""
    if not (realdata / "sunrgbd_mmdet3d" / "image" / "000001.jpg").is_file():
        return {"skipped": f"{realdata}/sunrgbd_mmdet3d not found; pass --realdata PATH/TO/shared/realdata"}
    return sun_rgbd_check(model, realdata)


if __name__ == "__main__":
    sys.exit(main())
