"""Scene records and the on-disk dataset: a JSONL index of annotations plus one .npz per scene.

A ``SceneRecord`` is what both the simulator and a converted real recording produce: a
point cloud in the sensor frame and the ground-truth objects (category, colour name,
oriented box in the gravity-aligned frame, support). Annotations (``annotations.py``)
are computed from records; ``write_dataset`` stores both, assigning fixed scene-level
splits by seed and a compositional test split of held-out (category, colour, relation)
combinations. The format is documented in ``docs/dataset_format.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from threed_llm_ros.data.annotation_types import TASKS, Annotation
from threed_llm_ros.data.relations import RELATIONS
from threed_llm_ros.data.catalog import CATEGORY_NAMES, COLOR_NAMES
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.geometry.frames import UP_AXIS_ROTATIONS, to_gravity_frame

DATASET_FORMAT = "threed_llm_ros.dataset/1"
INDEX_FILE = "index.jsonl"
DATASET_FIX = ("give a dataset directory (index.jsonl + scenes/), e.g. one made with "
               "`threed-llm generate-data --output DIR`")
META_FILE = "meta.json"
SCENES_DIRECTORY = "scenes"
SPLITS = ("train", "val", "test", "test_compositional")
IMAGE_KEYS = ("rgb", "depth", "instance")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ObjectRecord:
    """One ground-truth object; ``color`` is a name from the catalog, or "" when unknown."""

    index: int
    category: str
    color: str
    box: OrientedBox  # gravity-aligned frame of the record's sensor (x forward, y left, z up)
    on: int | None = None  # index of the supporting object
    visible_points: int = 0  # points of the record's cloud that belong to the object


@dataclass(eq=False)
class SceneRecord:
    """A scene as the model sees it (points in the sensor frame) with its ground truth.

    ``up_axis`` names the sensor frame's up direction ("-y": camera optical frame,
    "z": REP-103 body frame); boxes are in that frame's gravity-aligned view.
    ``images`` optionally holds "rgb" (H×W×3 uint8), "depth" (H×W float32 metres, NaN
    = no return) and "instance" (H×W int16, object index or -1), with ``intrinsics``.
    """

    scene_id: str
    points: np.ndarray
    colors: np.ndarray
    up_axis: str
    frame_id: str
    objects: list[ObjectRecord]
    room_type: str = ""
    intrinsics: CameraIntrinsics | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float32).reshape(-1, 3)
        self.colors = np.ascontiguousarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        if len(self.points) != len(self.colors):
            raise ConfigError("colors", f"{len(self.colors)} colours for {len(self.points)} points", "give one colour per point")
        if self.up_axis not in UP_AXIS_ROTATIONS:
            raise ConfigError("up_axis", f"unknown up axis {self.up_axis!r}", f"use one of {sorted(UP_AXIS_ROTATIONS)}")
        for position, obj in enumerate(self.objects):
            if obj.index != position:
                raise ConfigError("objects", f"object at position {position} has index {obj.index}", "number objects 0..M-1")
            if obj.on is not None and not (0 <= obj.on < len(self.objects) and obj.on != position):
                raise ConfigError("objects", f"object {position} rests on invalid index {obj.on}", "use another object's index")
        unknown = set(self.images) - set(IMAGE_KEYS)
        if unknown:
            raise ConfigError("images", f"unknown image keys {sorted(unknown)}", f"use {IMAGE_KEYS}")

    def points_gravity(self) -> np.ndarray:
        """The cloud rotated into the gravity-aligned frame the boxes are in."""
        return to_gravity_frame(self.points, self.up_axis)

    def boxes_array(self) -> np.ndarray:
        """Ground-truth boxes as an M×7 array (cx, cy, cz, length, width, height, yaw)."""
        return np.array([obj.box.to_array() for obj in self.objects], dtype=np.float64).reshape(-1, 7)


def write_scene(path: str | Path, record: SceneRecord) -> None:
    """Write one record as a compressed .npz (the per-scene file of the dataset)."""
    arrays: dict[str, np.ndarray] = {
        "scene_id": np.array(record.scene_id),
        "points": record.points,
        "colors": record.colors,
        "boxes": record.boxes_array(),
        "labels": np.array([obj.category for obj in record.objects], dtype=str).reshape(-1),
        "color_names": np.array([obj.color for obj in record.objects], dtype=str).reshape(-1),
        "support": np.array([-1 if obj.on is None else obj.on for obj in record.objects], dtype=np.int32).reshape(-1),
        "visible_points": np.array([obj.visible_points for obj in record.objects], dtype=np.int64).reshape(-1),
        "up_axis": np.array(record.up_axis),
        "frame_id": np.array(record.frame_id),
        "room_type": np.array(record.room_type),
    }
    if record.intrinsics is not None:
        arrays["camera_matrix"] = record.intrinsics.matrix
        arrays["image_size"] = np.array([record.intrinsics.width, record.intrinsics.height], dtype=np.int64)
    arrays.update(record.images)
    np.savez_compressed(path, **arrays)


def read_scene(path: str | Path) -> SceneRecord:
    """Read a record written by ``write_scene``."""
    with np.load(path, allow_pickle=False) as data:
        support = data["support"]
        visible = data["visible_points"]
        objects = [
            ObjectRecord(
                index=index,
                category=str(label),
                color=str(color),
                box=OrientedBox.from_array(box),
                on=None if int(support[index]) < 0 else int(support[index]),
                visible_points=int(visible[index]),
            )
            for index, (label, color, box) in enumerate(zip(data["labels"], data["color_names"], data["boxes"]))
        ]
        intrinsics = None
        if "camera_matrix" in data:
            matrix, size = data["camera_matrix"], data["image_size"]
            intrinsics = CameraIntrinsics(
                float(matrix[0, 0]), float(matrix[1, 1]), float(matrix[0, 2]), float(matrix[1, 2]), int(size[0]), int(size[1])
            )
        images = {key: data[key] for key in IMAGE_KEYS if key in data}
        return SceneRecord(
            scene_id=str(data["scene_id"]),
            points=data["points"],
            colors=data["colors"],
            up_axis=str(data["up_axis"]),
            frame_id=str(data["frame_id"]),
            objects=objects,
            room_type=str(data["room_type"]),
            intrinsics=intrinsics,
            images=images,
        )


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class SplitConfig:
    """Scene-level split fractions and the share of held-out (category, colour, relation) combinations."""

    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    heldout_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction", "heldout_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(name, f"{value} is not in [0, 1)", "use a fraction between 0 and 1")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError("test_fraction", "val + test fractions leave no training scenes", "keep val + test < 1")


def _unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) from the parts (independent of Python's hash seed)."""
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def scene_split(scene_id: str, config: SplitConfig = SplitConfig()) -> str:
    """The fixed split ("train", "val" or "test") of a scene, by seed and scene id.

    Hash-based, so adding scenes never moves existing ones to another split.
    """
    value = _unit_hash("split", config.seed, scene_id)
    if value < config.test_fraction:
        return "test"
    if value < config.test_fraction + config.val_fraction:
        return "val"
    return "train"


def choose_heldout_combinations(config: SplitConfig = SplitConfig()) -> list[tuple[str, str, str]]:
    """The (category, colour, relation) combinations held out of training, chosen by seed.

    Drawn from the whole catalog (categories × colours × relations), so the same seed
    holds out the same combinations whatever the dataset's size.
    """
    universe = list(itertools.product(CATEGORY_NAMES, COLOR_NAMES, RELATIONS))
    count = int(round(config.heldout_fraction * len(universe)))
    rng = np.random.default_rng([config.seed, 7])
    chosen = rng.choice(len(universe), size=count, replace=False) if count else []
    return sorted(universe[int(index)] for index in chosen)


def annotation_split(
    scene_split_name: str, annotation: Annotation, heldout: set[tuple[str, str, str]]
) -> str | None:
    """Split of one annotation: its scene's, or "test_compositional" / dropped (None) when it uses a held-out combination.

    Held-out combinations never reach training: such annotations of training scenes are
    dropped, those of validation and test scenes form ``test_compositional``.
    """
    uses_heldout = any(tuple(combo) in heldout for combo in annotation.attributes.get("combos", ()))
    if not uses_heldout:
        return scene_split_name
    return None if scene_split_name == "train" else "test_compositional"


# --------------------------------------------------------------------------- writing and loading


@dataclass(frozen=True)
class DatasetEntry:
    """One line of index.jsonl: an annotation of a scene, with its split."""

    scene_id: str
    split: str
    annotation: Annotation

    def to_json(self) -> str:
        """The JSONL line (no trailing newline)."""
        return json.dumps({"scene_id": self.scene_id, "split": self.split, **self.annotation.to_dict()}, sort_keys=False)

    @classmethod
    def from_json(cls, line: str) -> "DatasetEntry":
        """Parse a JSONL line."""
        values = json.loads(line)
        scene_id, split = values.pop("scene_id"), values.pop("split")
        return cls(scene_id, split, Annotation.from_dict(values))


def write_dataset(
    directory: str | Path,
    scenes: Iterable[tuple[SceneRecord, Sequence[Annotation]]],
    split_config: SplitConfig = SplitConfig(),
    *,
    metadata: dict[str, Any] | None = None,
    progress: bool = False,
    total: int | None = None,
) -> dict[str, Any]:
    """Write scenes and their annotations as a dataset directory; returns the summary also stored in meta.json.

    Scenes are written as they arrive (a generator keeps memory flat); the index is
    written at the end.
    """
    directory = Path(directory)
    (directory / SCENES_DIRECTORY).mkdir(parents=True, exist_ok=True)
    heldout = set(choose_heldout_combinations(split_config))
    entries: list[DatasetEntry] = []
    scene_splits: dict[str, str] = {}
    dropped = 0
    for record, annotations in tqdm(scenes, total=total, disable=not progress, desc="scenes", unit="scene"):
        if record.scene_id in scene_splits:
            raise ConfigError("scene_id", f"scene {record.scene_id!r} appears twice", "give every scene a unique id")
        split = scene_split(record.scene_id, split_config)
        scene_splits[record.scene_id] = split
        write_scene(directory / SCENES_DIRECTORY / f"{record.scene_id}.npz", record)
        for annotation in annotations:
            annotation_split_name = annotation_split(split, annotation, heldout)
            if annotation_split_name is None:
                dropped += 1
                continue
            entries.append(DatasetEntry(record.scene_id, annotation_split_name, annotation))
    with open(directory / INDEX_FILE, "w", encoding="utf-8") as index_file:
        for entry in entries:
            index_file.write(entry.to_json() + "\n")
    summary = {
        "format": DATASET_FORMAT,
        "scenes": len(scene_splits),
        "scene_splits": dict(Counter(scene_splits.values())),
        "annotations": len(entries),
        "dropped_heldout_from_train": dropped,
        "splits": dict(Counter(entry.split for entry in entries)),
        "tasks": dict(Counter(entry.annotation.task for entry in entries)),
        "split_config": asdict(split_config),
        "heldout_combinations": [list(combo) for combo in sorted(heldout)],
        **(metadata or {}),
    }
    (directory / META_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


class SceneDataset:
    """The annotations of a dataset directory as (SceneRecord, Annotation) pairs.

    Scenes load lazily from their .npz files and stay in an LRU cache of ``cache_size``
    records, so iterating annotations grouped by scene reads each file once.
    """

    def __init__(
        self,
        directory: str | Path,
        splits: str | Sequence[str] | None = None,
        tasks: str | Sequence[str] | None = None,
        cache_size: int = 32,
    ) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if not index_path.is_file():
            problem = "does not exist" if not self.directory.exists() else f"has no {INDEX_FILE}"
            raise ConfigError("directory", f"{self.directory} {problem}", DATASET_FIX)
        wanted_splits = _as_set(splits, SPLITS, "splits")
        wanted_tasks = _as_set(tasks, TASKS, "tasks")
        self.entries: list[DatasetEntry] = []
        with open(index_path, encoding="utf-8") as index_file:
            for line in index_file:
                if not line.strip():
                    continue
                entry = DatasetEntry.from_json(line)
                if (wanted_splits is None or entry.split in wanted_splits) and (
                    wanted_tasks is None or entry.annotation.task in wanted_tasks
                ):
                    self.entries.append(entry)
        meta_path = self.directory / META_FILE
        self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        if cache_size < 1:
            raise ConfigError("cache_size", f"{cache_size} is below 1", "cache at least one scene")
        self.cache_size = cache_size
        self._cache: OrderedDict[str, SceneRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, position: int) -> tuple[SceneRecord, Annotation]:
        entry = self.entries[position]
        return self.scene(entry.scene_id), entry.annotation

    def __iter__(self) -> Iterator[tuple[SceneRecord, Annotation]]:
        for position in range(len(self.entries)):
            yield self[position]

    def scene(self, scene_id: str) -> SceneRecord:
        """The record of a scene (cached)."""
        if scene_id in self._cache:
            self._cache.move_to_end(scene_id)
            return self._cache[scene_id]
        record = read_scene(self.directory / SCENES_DIRECTORY / f"{scene_id}.npz")
        self._cache[scene_id] = record
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return record

    @property
    def scene_ids(self) -> list[str]:
        """Scene ids of the selected annotations, in first-appearance order."""
        return list(dict.fromkeys(entry.scene_id for entry in self.entries))

    def counts(self) -> dict[str, dict[str, int]]:
        """Annotation counts per split and per task."""
        return {
            "splits": dict(Counter(entry.split for entry in self.entries)),
            "tasks": dict(Counter(entry.annotation.task for entry in self.entries)),
        }


def _as_set(value: str | Sequence[str] | None, allowed: Sequence[str], name: str) -> set[str] | None:
    if value is None:
        return None
    chosen = {value} if isinstance(value, str) else set(value)
    unknown = chosen - set(allowed)
    if unknown:
        raise ConfigError(name, f"unknown {name} {sorted(unknown)}", f"use some of {list(allowed)}")
    return chosen


def load_dataset(
    directory: str | Path,
    splits: str | Sequence[str] | None = None,
    tasks: str | Sequence[str] | None = None,
    cache_size: int = 32,
) -> SceneDataset:
    """Open a dataset directory, optionally keeping only some splits and tasks."""
    return SceneDataset(directory, splits=splits, tasks=tasks, cache_size=cache_size)


# --------------------------------------------------------------------------- real recordings

# SUN RGB-D's upright depth frame (x right, y forward, z up) → REP-103 (x forward, y left, z up).
_SUNRGBD_TO_BODY = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def infer_support(boxes: Sequence[OrientedBox], tolerance_m: float = 0.08) -> list[int | None]:
    """Which box each box rests on: its bottom within ``tolerance_m`` of a larger box's top, centre above that top.

    Real annotations give boxes but no support; this recovers "on" from geometry.
    """
    support: list[int | None] = []
    for index, box in enumerate(boxes):
        bottom = box.center[2] - box.size[2] / 2
        best: int | None = None
        best_gap = tolerance_m
        for other_index, other in enumerate(boxes):
            if other_index == index or other.size[0] * other.size[1] <= box.size[0] * box.size[1]:
                continue
            gap = abs(bottom - (other.center[2] + other.size[2] / 2))
            footprint_point = np.array([[box.center[0], box.center[1], other.center[2]]])
            if gap <= best_gap and bool(other.contains(footprint_point)[0]):
                best, best_gap = other_index, gap
        support.append(best)
    return support


def convert_sunrgbd_sample(
    label_path: str | Path, points_npz: str | Path, scene_id: str | None = None, frame_id: str = "camera_link",
    room_type: str = "",
) -> SceneRecord:
    """A SUN RGB-D frame (VoteNet/mmdetection3d export) as a SceneRecord (up_axis "z").

    Label lines are ``class xmin ymin w h cx cy cz w l h ox oy`` in the upright depth
    frame (x right, y forward, z up); the box is (2l, 2w, 2h) with its length along
    (ox, oy). The cloud (key ``pc``: x y z r g b, colours 0-1) and the boxes are rotated
    into REP-103 axes (x forward, y left, z up). Colours are unknown (""); support is
    inferred from the boxes; visible points are the cloud points inside each box.
    """
    label_path = Path(label_path)
    with np.load(points_npz, allow_pickle=False) as data:
        cloud = np.asarray(data["pc"], dtype=np.float64)
    points = cloud[:, :3] @ _SUNRGBD_TO_BODY.T
    colors = np.clip(np.round(cloud[:, 3:6] * 255.0), 0, 255).astype(np.uint8)
    categories: list[str] = []
    boxes: list[OrientedBox] = []
    for line in label_path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields:
            continue
        values = [float(value) for value in fields[1:]]
        center = _SUNRGBD_TO_BODY @ np.array(values[4:7])
        half_width, half_length, half_height = values[7:10]
        heading = float(np.arctan2(values[11], values[10]))  # length axis direction in the upright frame
        yaw = float((heading - np.pi / 2 + np.pi) % (2 * np.pi) - np.pi)
        categories.append(fields[0].replace("_", " "))
        boxes.append(OrientedBox(tuple(center.tolist()), (2 * half_length, 2 * half_width, 2 * half_height), yaw))
    support = infer_support(boxes)
    objects = [
        ObjectRecord(index, category, "", box, support[index], int(box.contains(points).sum()))
        for index, (category, box) in enumerate(zip(categories, boxes))
    ]
    return SceneRecord(
        scene_id=scene_id or f"sunrgbd_{label_path.stem}",
        points=points.astype(np.float32),
        colors=colors,
        up_axis="z",
        frame_id=frame_id,
        objects=objects,
        room_type=room_type,
    )
