"""``threed-llm train-objects``: train the object classifier on the simulator's own proposals.

Each simulated frame goes through exactly the proposal stage the robot runs (gravity from
the floor, structure removal, clustering, box fit), so the classifier learns the
fragments and partial views a single depth view really gives. A proposal's label is the
object most of its points belong to (the simulator's instance mask), ``other`` where
that is the room or no object holds half of it. Clouds are thinned at random to a share
of their points, so the features do not depend on one sensor's density. The temperature
that calibrates the probabilities is fitted on held-out scenes (negative log-likelihood).

The simulator's walls are bare, a real room's are not: pictures, frames, door frames and
shelves leave thin slabs on every wall once it is removed. :func:`wall_clutter` adds such
slabs, placed on the frame's own walls, as ``other`` examples, so the classifier learns that
a thin thing flat on a wall is none of the catalogue's objects.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from threed_llm_ros.data.generate import scene_seed
from threed_llm_ros.data.sim.frames import simulate
from threed_llm_ros.data.sim.placement import SceneConfig
from threed_llm_ros.data.sim.sensor import SensorConfig
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.objects.gravity import estimate_gravity
from threed_llm_ros.geometry.frames import yaw_rotation
from threed_llm_ros.objects.fit import fit_box
from threed_llm_ros.objects.pieces import propose, wall_distance_of
from threed_llm_ros.objects.recognition import (
    FEATURE_NAMES, OTHER, ClassifierConfig, ShapeClassifier, ensemble_probabilities, save_classifier, shape_features,
)
from threed_llm_ros.objects.refine import REFINER_DIRECTORY, REFINER_FEATURE_NAMES, view_features

MIN_PURITY = 0.5
CLUTTER_PER_WALL = 2


@dataclass(frozen=True)
class ObjectTrainConfig:
    """Scenes, image size, steps and seed of one training run."""

    scenes: int = 800
    validation_scenes: int = 100
    seed: int = 7
    width: int = 320
    height: int = 240
    fov_deg: float = 60.0
    steps: int = 3000
    batch: int = 256
    learning_rate: float = 3e-3
    members: int = 5


def proposal_examples(seed: int, config: ObjectTrainConfig, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Features (``REFINER_FEATURE_NAMES``: the shape features, then the view's) and class indices
    of every proposal of one simulated frame."""
    intrinsics = CameraIntrinsics.from_field_of_view(config.width, config.height, config.fov_deg)
    frame = simulate(seed, intrinsics, SceneConfig(), SensorConfig(enabled=True))
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(frame.depth_m) & (frame.depth_m > 0)
    instance = frame.instance_mask[valid].astype(np.int64)
    rng = np.random.default_rng(seed)
    keep = rng.random(len(frame.points)) < rng.uniform(0.3, 1.0)
    points, colors, instance = frame.points[keep], frame.colors[keep], instance[keep]
    gravity = estimate_gravity(points, "-y", seed=seed)
    proposals, walls, voxel_of_point, members = propose(gravity.to_gravity(points), colors / 255.0, gravity, seed=seed)
    other = classes.index(OTHER)
    features = wall_clutter(rng, walls, gravity.floor_z)
    labels = [other] * len(features)
    for proposal, voxels in zip(proposals, members):
        owners = instance[np.isin(voxel_of_point, voxels)]
        label = other
        if len(owners):
            counts = np.bincount(owners + 1, minlength=len(frame.objects) + 1)
            best = int(np.argmax(counts))
            if best > 0 and counts[best] >= MIN_PURITY * len(owners):
                label = classes.index(frame.objects[best - 1].category)
        features.append(np.concatenate([
            shape_features(proposal.points, proposal.box, gravity.floor_z, proposal.wall_distance, proposal.support_gap),
            view_features(proposal.points, proposal.box)]))
        labels.append(label)
    if not features:
        return np.zeros((0, len(REFINER_FEATURE_NAMES)), np.float32), np.zeros(0, np.int64)
    return np.stack(features), np.asarray(labels, dtype=np.int64)


def wall_clutter(rng: np.random.Generator, walls: list[tuple[np.ndarray, float]], floor_z: float) -> list[np.ndarray]:
    """Feature rows (shape and view) of thin slabs flat on the walls (pictures, frames, shelves): ``other``."""
    rows = []
    for normal, offset in walls:
        for _ in range(CLUTTER_PER_WALL):
            length, thickness = rng.uniform(0.15, 1.6), rng.uniform(0.01, 0.07)
            height, bottom = rng.uniform(0.08, 1.2), rng.uniform(0.2, 2.2)
            count = int(rng.integers(20, 400))
            along = np.array([-normal[1], normal[0], 0.0])
            anchor = -offset * normal  # the wall point nearest the sensor
            anchor[2] = 0.0
            centre = anchor + normal * (thickness / 2 + rng.uniform(0.0, 0.08)) + along * rng.uniform(-1.5, 1.5)
            local = np.column_stack([rng.uniform(-length / 2, length / 2, count), rng.uniform(-thickness / 2, thickness / 2, count),
                                     rng.uniform(0, height, count)])
            yaw = float(np.arctan2(along[1], along[0]))
            points = local @ yaw_rotation(yaw).T + np.array([centre[0], centre[1], floor_z + bottom])
            points += rng.normal(0, 0.008, points.shape)
            box = fit_box(points, floor_z)
            gap = rng.uniform(0.0, bottom)
            rows.append(np.concatenate([shape_features(points, box, floor_z, wall_distance_of(box, walls), gap),
                                        view_features(points, box)]))
    return rows


def build_examples(first: int, count: int, config: ObjectTrainConfig, classes: list[str], label: str,
                   progress: bool = True, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the proposals of ``count`` simulated frames from scene ``first`` on,
    rendered by ``workers`` processes (each frame has its own seed, and the rows keep the frames'
    order, so they do not depend on how many)."""
    seeds = [scene_seed(config.seed, index) for index in range(first, first + count)]
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(proposal_examples, seeds, [config] * count, [classes] * count, chunksize=8)
    else:
        results = (proposal_examples(seed, config, classes) for seed in seeds)
    rows, labels = [], []
    try:
        for features, targets in tqdm(results, total=count, desc=f"proposals ({label})", unit="scene",
                                      disable=not progress):
            rows.append(features)
            labels.append(targets)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return np.concatenate(rows), np.concatenate(labels)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The softmax temperature whose ensemble probabilities have the lowest held-out negative
    log-likelihood (grid search); ``logits`` are (members, N, classes)."""
    grid = np.exp(np.linspace(np.log(0.3), np.log(5.0), 60))
    picked = torch.arange(len(labels))
    losses = [float(-ensemble_probabilities(logits, t)[picked, labels].clamp_min(1e-12).log().mean()) for t in grid]
    return float(grid[int(np.argmin(losses))])


def pipeline_fingerprint() -> str:
    """A hash of the code that turns a simulated frame into proposal features (simulator,
    catalogue, geometry, gravity, proposals, box fit, features): cached features made by
    other code are stale, however equal the configuration."""
    import hashlib

    package = Path(__file__).resolve().parent.parent
    sources = sorted([*(package / "geometry").glob("*.py"), *(package / "data" / "sim").glob("*.py"),
                      package / "data" / "catalog.py",
                      *(package / "objects" / name for name in ("gravity.py", "proposals.py", "fit.py", "recognition.py",
                                                                "layer.py", "pieces.py", "visibility.py", "refine.py"))])
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _examples(config: ObjectTrainConfig, classes: list[str], cache: Path | None, progress: bool,
              workers: int = 1) -> tuple[np.ndarray, ...]:
    """Training and validation features and labels, from ``cache`` (an .npz) when it was made
    with the same configuration and the same proposal code, else from the simulator (and then
    written to ``cache``)."""
    key = json.dumps({**asdict(config), "code": pipeline_fingerprint()}, sort_keys=True)
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["key"]) == key and data["train_x"].shape[1] == len(REFINER_FEATURE_NAMES):
                return data["train_x"], data["train_y"], data["val_x"], data["val_y"]
    train_x, train_y = build_examples(0, config.scenes, config, classes, "train", progress, workers)
    val_x, val_y = build_examples(config.scenes, config.validation_scenes, config, classes, "validation", progress, workers)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, key=np.array(key), train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y)
    return train_x, train_y, val_x, val_y


def _train_ensemble(model: ShapeClassifier, x: torch.Tensor, y: torch.Tensor, config: ObjectTrainConfig,
                    progress: bool, what: str) -> list[float]:
    """Train each member of ``model`` on its own bootstrap resample of (``x``, ``y``); the
    members' mean loss per step."""
    losses: list[list[float]] = []
    for index, member in enumerate(model.members):
        generator = torch.Generator().manual_seed(config.seed + index)
        resample = torch.randint(0, len(x), (len(x),), generator=generator)
        member_x, member_y = (x[resample] - model.mean) / model.scale, y[resample]
        optimizer = torch.optim.AdamW(member.parameters(), lr=config.learning_rate, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
        member_losses = []
        for _ in tqdm(range(config.steps), desc=f"training {what} member {index + 1}/{config.members}",
                      disable=not progress):
            batch = torch.randint(0, len(member_x), (config.batch,), generator=generator)
            loss = torch.nn.functional.cross_entropy(member(member_x[batch]), member_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            member_losses.append(loss.item())
        losses.append(member_losses)
    return np.mean(np.asarray(losses), axis=0).tolist()


def _fit_and_report(features: list[str], classes: list[str], train: tuple[np.ndarray, np.ndarray],
                    validation: tuple[np.ndarray, np.ndarray], config: ObjectTrainConfig, progress: bool,
                    what: str) -> tuple[ShapeClassifier, dict]:
    """An ensemble over ``features`` → ``classes`` trained on ``train`` (rows, labels), its
    temperature fitted on ``validation``, and its report."""
    (train_x, train_y), (val_x, val_y) = train, validation
    mean, scale = train_x.mean(axis=0), train_x.std(axis=0) + 1e-3
    model = ShapeClassifier(ClassifierConfig(classes=classes, features=features, mean=mean.tolist(),
                                             scale=scale.tolist(), members=config.members))
    losses = _train_ensemble(model, torch.as_tensor(train_x), torch.as_tensor(train_y), config, progress, what)
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(val_x))
    model.config.temperature = fit_temperature(logits, torch.as_tensor(val_y))
    predicted = ensemble_probabilities(logits, model.config.temperature).argmax(-1)
    report = {
        "training": asdict(config),
        "train_proposals": int(len(train_y)), "validation_proposals": int(len(val_y)),
        "loss_first_last": [float(np.mean(losses[:10])), float(np.mean(losses[-10:]))],
        "validation_accuracy": round(float((predicted == torch.as_tensor(val_y)).float().mean()), 4),
    }
    return model, report


def train_object_classifier(config: ObjectTrainConfig, output: str | Path, progress: bool = True,
                            cache: Path | None = None, only: str = "all", workers: int = 1) -> dict:
    """Train, calibrate and save the shape classifier (``only="classifier"``), its look-alike refiner
    over the object proposals into ``output/refiner`` (``only="refiner"``, ``objects/refine.py``), or
    both; returns their reports by name (each also in its config.json). Each ensemble member trains
    on its own bootstrap resample of the proposals; ``workers`` processes render the frames."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    classes = ClassifierConfig().classes
    train_x, train_y, val_x, val_y = _examples(config, classes, cache, progress, workers)
    reports = {}
    if only in ("all", "classifier"):
        shape = len(FEATURE_NAMES)
        model, report = _fit_and_report(list(FEATURE_NAMES), classes, (train_x[:, :shape], train_y),
                                        (val_x[:, :shape], val_y), config, progress, "classifier")
        report["seconds"] = round(time.perf_counter() - started, 1)
        save_classifier(model, output, extra={"report": report})
        reports["classifier"] = report
    if only in ("all", "refiner"):
        objects = [name for name in classes if name != OTHER]
        index_among_objects = np.array([objects.index(name) if name != OTHER else -1 for name in classes])
        train_rows, val_rows = index_among_objects[train_y] >= 0, index_among_objects[val_y] >= 0
        model, report = _fit_and_report(
            list(REFINER_FEATURE_NAMES), objects, (train_x[train_rows], index_among_objects[train_y[train_rows]]),
            (val_x[val_rows], index_among_objects[val_y[val_rows]]), config, progress, "refiner")
        report["seconds"] = round(time.perf_counter() - started, 1)
        save_classifier(model, Path(output) / REFINER_DIRECTORY, extra={"report": report})
        reports["refiner"] = report
    return reports


def main(argv: list[str] | None = None) -> int:
    """``threed-llm train-objects --output models/object-classifier``."""
    parser = argparse.ArgumentParser(prog="threed-llm train-objects", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("models/object-classifier"))
    parser.add_argument("--scenes", type=int, default=ObjectTrainConfig.scenes)
    parser.add_argument("--validation-scenes", type=int, default=ObjectTrainConfig.validation_scenes)
    parser.add_argument("--steps", type=int, default=ObjectTrainConfig.steps)
    parser.add_argument("--seed", type=int, default=ObjectTrainConfig.seed)
    parser.add_argument("--members", type=int, default=ObjectTrainConfig.members, help="ensemble size")
    parser.add_argument("--only", choices=("all", "classifier", "refiner"), default="all",
                        help="train only the shape classifier, or only its look-alike refiner (into OUTPUT/refiner)")
    parser.add_argument("--cache", default="runs/object_features.npz",
                        help="proposal features kept between runs of the same configuration and proposal code ('' = none)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes rendering the frames (default: one per core; the result does not depend on it)")
    arguments = parser.parse_args(argv)
    config = ObjectTrainConfig(scenes=arguments.scenes, validation_scenes=arguments.validation_scenes,
                               steps=arguments.steps, seed=arguments.seed, members=arguments.members)
    report = train_object_classifier(config, arguments.output, cache=Path(arguments.cache) if arguments.cache else None,
                                     only=arguments.only, workers=max(1, arguments.workers))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
