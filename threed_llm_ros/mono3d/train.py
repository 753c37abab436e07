"""Train the single-image grounder on cached simulator features.

``threed-llm mono3d-train --output models/mono3d`` (defaults: 2500 training frames, 300 test
frames, 200 calibration frames, 5000 steps of 12 frames, width 96, one torch thread: the shipped
checkpoint's run, timed in docs/mono3d.md) renders the frames (``data.py``), caches the frozen
backbone's features under ``--cache``, trains the grounder with a progress bar, sets the presence
threshold on the held-out calibration frames, evaluates it on the test split (``evaluate.py``)
and writes ``model.safetensors``, ``config.json`` and ``metrics.json`` to ``--output``.
``--no-geometry-projection`` trains the ablation. Seeds are fixed: the same command gives the
same model on the same machine.

Losses per query: cross-entropy of the centre pointer against the token nearest the true
centre, smooth-L1 of (u, v) in token spacings, L1 of log canonical depth and log size,
L1 of the doubled-angle yaw; the ablation adds L1 of its direct (X, Y, log Z). With the
ground-plane depth (the default), also: cross-entropy + smooth-L1 of the bottom row's pointer, L1 of
the log drop below the reference camera (1.2 m: the true drop less the frame's height difference, so with
``--tilt`` the drawn heights are given to the model as TF gives them to the node, and it learns
1.2 m − the support's height instead of guessing the camera height; ``--height-unknown`` hides them) and
the Laplace likelihood of each depth estimate under its predicted uncertainty (what makes the fusion
weights mean something). Presence:
binary cross-entropy over the referrals (present) and ABSENT_PER_FRAME queries per frame for
labels the frame does not show (``data.draw_absent_queries``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from threed_llm_ros.mono3d.data import (
    DEFAULT_TEST_FRAMES,
    DEFAULT_TRAIN_FRAMES,
    CALIBRATION_SEED_OFFSET,
    DEFAULT_CALIBRATION_FRAMES,
    TEST_SEED_OFFSET,
    PITCH_ONLY_SPLIT_SUFFIX,
    TILT_SPLIT_SUFFIX,
    FeatureSet,
    cache_file,
    draw_absent_queries,
    simulated_feature_set,
    subset,
)
from threed_llm_ros.mono3d.model import (
    MIN_DROP_M, Mono3DConfig, Mono3DGrounder, camera_features, doubled_angle, save_model,
)
from threed_llm_ros.mono3d.projection import DEFAULT_CAMERA_HEIGHT_M

ABSENT_PER_FRAME = 2  # queries for labels a training frame does not show


def bottom_targets(targets: dict[str, torch.Tensor], camera: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image row of each box's bottom centre and its drop below the camera (m, optical y is down):
    Y_b = Y + h/2, v_b = fy·Y_b/Z + cy (``camera``: canvas fx, fy, cx, cy per query)."""
    center = targets["center_optical"]
    drop = center[:, 1] + 0.5 * targets["size"][:, 2]
    return camera[:, 1] * drop / center[:, 2] + camera[:, 3], drop


def query_losses(model: Mono3DGrounder, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                 centers: torch.Tensor, camera: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The loss terms of a batch of queries (see the module docstring); ``camera`` (canvas fx, fy, cx, cy
    per query) is needed for the ground-plane terms."""
    spacing = float(centers[1, 0] - centers[0, 0])  # pixels between neighbouring token centres
    nearest = torch.cdist(targets["uv"], centers).argmin(dim=1)
    losses = {
        "pointer": nn.functional.cross_entropy(outputs["pointer_logits"], nearest),
        "uv": nn.functional.smooth_l1_loss(outputs["uv"] / spacing, targets["uv"] / spacing),
        "depth": (outputs["log_depth_canonical"] - torch.log(targets["depth_canonical"][:, 0])).abs().mean(),
        "size": (outputs["log_size"] - torch.log(targets["size"])).abs().mean(),
        "yaw": (outputs["yaw"] - doubled_angle(targets["yaw"])).abs().mean(),
    }
    if "center_direct" in outputs:
        center = targets["center_optical"]
        direct = torch.cat((center[:, :2], torch.log(center[:, 2:])), dim=1)
        losses["center_direct"] = (outputs["center_direct"] - direct).abs().mean() * 3.0
    if "v_bottom" in outputs:
        if camera is None:
            raise ValueError("the ground-plane losses need the per-query canvas camera")
        v_bottom, drop = bottom_targets(targets, camera)
        bottom_uv = torch.stack((targets["uv"][:, 0], v_bottom), dim=1)
        losses["bottom_pointer"] = nn.functional.cross_entropy(outputs["bottom_logits"],
                                                               torch.cdist(bottom_uv, centers).argmin(dim=1))
        losses["bottom_row"] = nn.functional.smooth_l1_loss(outputs["v_bottom"] / spacing, v_bottom / spacing)
        drop = drop - outputs["height_shift"]  # the drop below the reference camera
        losses["drop"] = (outputs["log_drop"] - torch.log(drop.clamp(min=MIN_DROP_M))).abs().mean()
        error = (outputs["log_depth_estimates"] - torch.log(targets["depth_canonical"])).abs()
        sigma = outputs["log_depth_sigma"]
        losses["depth_likelihood"] = 0.5 * (error * torch.exp(-sigma) + sigma).sum(dim=-1).mean()
    return losses


def forward_features(model: Mono3DGrounder, features: FeatureSet,
                     absent: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                     known_height: bool = False) -> dict[str, torch.Tensor]:
    """The model on every query of a (small) feature set, then on the ``absent`` queries (image index,
    category, colour) if given: their outputs follow the referrals' in each tensor. ``known_height`` gives
    the model each frame's true camera height (as TF does on a robot)."""
    camera = camera_features(features.canvas_cameras, model.config)
    image_index, category, color = features.image_index, features.category, features.color
    if absent is not None:
        image_index, category, color = (torch.cat(pair) for pair in zip((image_index, category, color), absent))
    return model(features.local.float(), features.global_.float(), image_index, category, color, camera,
                 features.camera_height if known_height else None)


def presence_loss(outputs: dict[str, torch.Tensor], present_count: int) -> torch.Tensor:
    """Binary cross-entropy of the presence logit: the first ``present_count`` queries are referrals
    (present), the rest absent labels."""
    logits = outputs["presence_logit"]
    labels = torch.zeros_like(logits)
    labels[:present_count] = 1.0
    return nn.functional.binary_cross_entropy_with_logits(logits, labels)


def present_part(outputs: dict[str, torch.Tensor], present_count: int) -> dict[str, torch.Tensor]:
    """The outputs of the referrals only (the first ``present_count`` queries)."""
    return {key: value[:present_count] for key, value in outputs.items()}


def train(model: Mono3DGrounder, features: FeatureSet, steps: int, frames_per_step: int = 16,
          learning_rate: float = 2e-3, progress: bool = True, known_height: bool = True) -> list[float]:
    """AdamW with a cosine schedule over ``steps`` batches of frames (``known_height``: each frame's camera
    height given, see the module docstring); returns the total loss per step."""
    from tqdm import tqdm

    from threed_llm_ros.mono3d.image_tokens import token_centers

    generator = torch.Generator().manual_seed(model.config.seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=max(1, steps), pct_start=0.05)
    h, w = features.local.shape[-2:]
    centers = token_centers(h, w, model.config.canvas_height, model.config.canvas_width)
    frame_count = features.local.shape[0]
    history = []
    model.train()
    bar = tqdm(range(steps), desc="mono3d train", unit="step", disable=not progress)
    for _ in bar:
        frames = torch.randperm(frame_count, generator=generator)[:frames_per_step]
        batch, _ = subset(features, frames)
        if len(batch) == 0:
            continue
        absent = draw_absent_queries(batch.visible, generator, ABSENT_PER_FRAME)
        outputs = forward_features(model, batch, absent, known_height)
        camera = camera_features(batch.canvas_cameras, model.config)[batch.image_index] * model.config.canvas_width
        losses = query_losses(model, present_part(outputs, len(batch)), batch.targets, centers, camera)
        losses["presence"] = presence_loss(outputs, len(batch))
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        history.append(float(total.detach()))
        bar.set_postfix(loss=f"{sum(history[-20:]) / len(history[-20:]):.3f}")
    model.eval()
    return history


def load_or_build(seeds: range, path: Path | None, config: Mono3DConfig, progress: bool,
                  realism: bool = False, tilt: bool = False, fixed_height: bool = False,
                  camera_height_m: float | None = None) -> FeatureSet:
    """The cached features of ``seeds`` from ``path``, or render (``realism``, ``tilt``, ``fixed_height``,
    ``camera_height_m``: see ``data.simulate_frame``) and cache them there."""
    if path is not None and path.is_file():
        return FeatureSet.load(path)
    from threed_llm_ros.mono3d.image_tokens import FrozenBackbone

    features = simulated_feature_set(seeds, FrozenBackbone(), config, progress=progress, realism=realism,
                                    tilt=tilt, fixed_height=fixed_height, camera_height_m=camera_height_m)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        features.save(path)
    return features


def tilt_suffix(tilt: bool, fixed_height: bool) -> str:
    """The cache-name suffix of a split rendered with ``tilt`` (and ``fixed_height``); "" for level cameras."""
    if fixed_height and not tilt:
        raise SystemExit("--fixed-height goes with --tilt (it keeps the tilted camera at 1.2 m)")
    return (PITCH_ONLY_SPLIT_SUFFIX if fixed_height else TILT_SPLIT_SUFFIX) if tilt else ""


def main(argv: list[str] | None = None) -> int:
    """``threed-llm mono3d-train``: render, cache, train, evaluate, save (see the module docstring).

    Length: one run's steps in the order they happen, each a call and a line of progress."""
    from threed_llm_ros.mono3d.evaluate import (
        calibrate_presence_threshold,
        evaluate,
        format_metrics,
        presence_probabilities,
        real_check_or_reason,
    )

    parser = argparse.ArgumentParser(prog="threed-llm mono3d-train", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=DEFAULT_TRAIN_FRAMES, help="training frames")
    parser.add_argument("--test-frames", type=int, default=DEFAULT_TEST_FRAMES)
    parser.add_argument("--calibration-frames", type=int, default=DEFAULT_CALIBRATION_FRAMES,
                        help="held-out frames that set the presence threshold")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--frames-per-step", type=int, default=12)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-geometry-projection", action="store_true", help="the ablation: regress metric XYZ")
    parser.add_argument("--realism", action="store_true",
                        help="training renders with uneven light, vignetting and blur (data.camera_realism)")
    parser.add_argument("--tilt", action="store_true",
                        help="cameras pitched 0-30 degrees down at 0.4-1.6 m, levelled before the model, their "
                             "heights given to it (all splits)")
    parser.add_argument("--fixed-height", action="store_true",
                        help="with --tilt: the pitch only, the camera at the simulator's 1.2 m")
    parser.add_argument("--height-unknown", action="store_true",
                        help="with --tilt: do not give the model the drawn camera heights (it guesses them)")
    parser.add_argument("--no-ground-plane", action="store_true",
                        help="depth from the direct head only (no bottom-row / camera-height estimate)")
    parser.add_argument("--cache", type=Path, default=Path("runs/mono3d_cache"), help="feature cache directory")
    parser.add_argument("--output", type=Path, default=Path("models/mono3d"))
    parser.add_argument("--realdata", type=Path, default=Path("../shared/realdata"), help="for the SUN RGB-D check")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    arguments = parser.parse_args(argv)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    torch.manual_seed(arguments.seed)
    config = Mono3DConfig(dim=arguments.dim, seed=arguments.seed,
                          geometry_projection=not arguments.no_geometry_projection,
                          ground_plane_depth=not (arguments.no_geometry_projection or arguments.no_ground_plane),
                          reference_camera_height_m=None if arguments.height_unknown else DEFAULT_CAMERA_HEIGHT_M)
    started = time.perf_counter()
    suffix = tilt_suffix(arguments.tilt, arguments.fixed_height)
    train_split = ("train_realism" if arguments.realism else "train") + suffix
    train_set = load_or_build(range(arguments.frames), cache_file(arguments.cache, train_split, arguments.frames),
                              config, True, arguments.realism, arguments.tilt, arguments.fixed_height)
    test_set = load_or_build(range(TEST_SEED_OFFSET, TEST_SEED_OFFSET + arguments.test_frames),
                             cache_file(arguments.cache, "test" + suffix, arguments.test_frames), config, True,
                             tilt=arguments.tilt, fixed_height=arguments.fixed_height)
    calibration_set = load_or_build(
        range(CALIBRATION_SEED_OFFSET, CALIBRATION_SEED_OFFSET + arguments.calibration_frames),
        cache_file(arguments.cache, "calibration" + suffix, arguments.calibration_frames), config, True,
        tilt=arguments.tilt, fixed_height=arguments.fixed_height)
    data_seconds = time.perf_counter() - started
    model = Mono3DGrounder(config)
    started = time.perf_counter()
    history = train(model, train_set, arguments.steps, arguments.frames_per_step, arguments.learning_rate,
                    known_height=not arguments.height_unknown)
    train_seconds = time.perf_counter() - started
    threshold = calibrate_presence_threshold(*presence_probabilities(model, calibration_set, seed=1))
    model.config = replace(model.config, presence_threshold=round(threshold, 4))
    save_model(model, arguments.output)  # kept even if the evaluation below fails
    metrics = evaluate(model, test_set, train_set)
    metrics["sun_rgbd_000001"] = real_check_or_reason(model, arguments.realdata)
    metrics["training"] = {"frames": arguments.frames, "queries": len(train_set), "steps": arguments.steps,
                           "frames_per_step": arguments.frames_per_step,
                           "calibration_frames": arguments.calibration_frames,
                           "presence_threshold": model.config.presence_threshold,
                           "learning_rate": arguments.learning_rate,
                           "first_loss": history[0] if history else None,
                           "last_loss_mean_50": sum(history[-50:]) / max(1, len(history[-50:])),
                           "data_seconds": round(data_seconds, 1), "train_seconds": round(train_seconds, 1),
                           "command": "threed-llm mono3d-train " + " ".join(argv if argv is not None else sys.argv[1:])}
    save_model(model, arguments.output, extra={"training": metrics["training"]})
    (arguments.output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (arguments.output / "metrics.md").write_text(format_metrics(metrics) + "\n", encoding="utf-8")
    print(format_metrics(metrics))
    print(f"wrote {arguments.output}/model.safetensors, config.json, metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
