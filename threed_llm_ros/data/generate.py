"""``threed-llm generate-data``: render simulated scenes, annotate them and write a dataset.

Each scene is drawn and rendered by the simulator (``data.sim``, seeded per scene), turned into a
``SceneRecord`` (a seeded random subset of the depth cloud in the camera optical frame,
up_axis "-y"), annotated for every task and written with fixed splits
(``dataset.write_dataset``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from threed_llm_ros.config_io import require_mapping
from threed_llm_ros.data.annotation_types import Annotation, AnnotationConfig
from threed_llm_ros.data.annotations import annotate_scene
from threed_llm_ros.data.dataset import META_FILE, ObjectRecord, SceneRecord, SplitConfig, write_dataset
from threed_llm_ros.data.sim.frames import RenderedFrame, simulate
from threed_llm_ros.data.sim.placement import SceneConfig
from threed_llm_ros.data.sim.sensor import SensorConfig
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.camera import CameraIntrinsics

OPTICAL_FRAME_ID = "camera_color_optical_frame"
#: The split's options in the flat form (``GenerateConfig.from_options``); the split's seed is the data seed.
SPLIT_OPTIONS = ("val_fraction", "test_fraction", "heldout_fraction")


@dataclass(frozen=True)
class GenerateConfig:
    """What ``generate-data`` produces: how many scenes, image size, cloud size, splits."""

    scenes: int = 100
    seed: int = 0
    width: int = 320
    height: int = 240
    fov_deg: float = 60.0
    points_per_scene: int = 20000
    save_images: bool = True
    sensor_noise: bool = True
    annotation: AnnotationConfig = field(default_factory=AnnotationConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        if self.scenes < 1:
            raise ConfigError("scenes", f"{self.scenes} is below 1", "generate at least one scene")
        if self.width < 8 or self.height < 8:
            raise ConfigError("width/height", f"{self.width}x{self.height} is too small", "use at least 8x8 pixels")
        if self.points_per_scene < 1:
            raise ConfigError("points_per_scene", f"{self.points_per_scene} is below 1", "keep at least one point")
        if not 0 < self.fov_deg < 180:
            raise ConfigError("fov_deg", f"{self.fov_deg} is not in (0, 180)", "use degrees between 0 and 180")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The flat options: the fields but ``annotation`` and ``split``, then the split's fractions."""
        return tuple(name for name in cls.__dataclass_fields__ if name not in ("annotation", "split")) + SPLIT_OPTIONS

    @classmethod
    def from_options(cls, values: Any, where: str = "generate") -> "GenerateConfig":
        """The config of the flat ``generate-data`` options (the command's flags, a training YAML's
        ``data.generate``); omitted options keep their defaults, unknown ones are an error naming ``where``."""
        values = dict(require_mapping(values, where))
        unknown = sorted(set(values) - set(cls.option_names()))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", f"unknown key(s) {unknown}", f"use only {list(cls.option_names())}")
        split = SplitConfig(int(values.get("seed", 0)), **{name: values.pop(name) for name in SPLIT_OPTIONS if name in values})
        return cls(**values, split=split)

    def options(self) -> dict[str, Any]:
        """The flat form ``from_options`` reads back."""
        values = {name: getattr(self, name) for name in self.option_names() if name not in SPLIT_OPTIONS}
        return {**values, **{name: getattr(self.split, name) for name in SPLIT_OPTIONS}}


def scene_seed(seed: int, index: int) -> int:
    """The simulator seed of scene ``index`` of a dataset generated with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def record_from_frame(
    frame: RenderedFrame, scene_id: str, max_points: int, rng: np.random.Generator, save_images: bool = True
) -> SceneRecord:
    """A rendered frame as a record: at most ``max_points`` random cloud points, per-object visible point counts."""
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(frame.depth_m) & (frame.depth_m > 0)
    instance_of_point = frame.instance_mask[valid]
    if len(instance_of_point) != len(frame.points):
        raise ValueError("rendered cloud and depth image disagree on the valid pixels")
    keep = np.arange(len(frame.points))
    if len(keep) > max_points:
        keep = np.sort(rng.choice(len(keep), size=max_points, replace=False))
    instances = instance_of_point[keep]
    visible = np.bincount(instances[instances >= 0], minlength=len(frame.objects))
    objects = [
        ObjectRecord(obj.index, obj.category, obj.color, obj.box, obj.on, int(visible[obj.index]))
        for obj in frame.objects
    ]
    images = {}
    if save_images:
        images = {"rgb": frame.rgb, "depth": frame.depth_m.astype(np.float32), "instance": frame.instance_mask.astype(np.int16)}
    return SceneRecord(
        scene_id=scene_id,
        points=frame.points[keep],
        colors=frame.colors[keep],
        up_axis="-y",
        frame_id=OPTICAL_FRAME_ID,
        objects=objects,
        room_type=frame.scene.room_type,
        intrinsics=frame.intrinsics,
        images=images,
    )


def generate_scenes(config: GenerateConfig) -> Iterator[tuple[SceneRecord, list[Annotation]]]:
    """Render, convert and annotate the configured scenes one by one."""
    intrinsics = CameraIntrinsics.from_field_of_view(config.width, config.height, config.fov_deg)
    sensor = SensorConfig(enabled=config.sensor_noise)
    for index in range(config.scenes):
        seed = scene_seed(config.seed, index)
        frame = simulate(seed, intrinsics, SceneConfig(), sensor)
        rng = np.random.default_rng([config.seed, index, 1])
        record = record_from_frame(frame, f"sim{config.seed}_{index:06d}", config.points_per_scene, rng, config.save_images)
        yield record, annotate_scene(record, config.annotation, seed=[config.seed, index, 2])


def generate_dataset(output: str | Path, config: GenerateConfig, progress: bool = True) -> dict:
    """Generate and write a dataset; returns its summary (also in meta.json) with the generation speed."""
    started = time.perf_counter()
    metadata = {"generator": {
        "seed": config.seed, "width": config.width, "height": config.height, "fov_deg": config.fov_deg,
        "points_per_scene": config.points_per_scene, "sensor_noise": config.sensor_noise,
        "annotation_config": asdict(config.annotation),
    }}
    summary = write_dataset(
        output, generate_scenes(config), config.split, metadata=metadata, progress=progress, total=config.scenes
    )
    elapsed = time.perf_counter() - started
    summary["seconds"] = round(elapsed, 3)
    summary["scenes_per_second"] = round(config.scenes / max(elapsed, 1e-9), 3)
    (Path(output) / META_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    """``threed-llm generate-data --output DIR --scenes N --seed S``."""
    parser = argparse.ArgumentParser(prog="threed-llm generate-data", description="Generate a simulated 3D-language dataset.")
    parser.add_argument("--output", type=Path, required=True, help="dataset directory to write")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=320, help="rendered image width (pixels)")
    parser.add_argument("--height", type=int, default=240, help="rendered image height (pixels)")
    parser.add_argument("--fov", type=float, default=60.0, help="horizontal field of view (degrees)")
    parser.add_argument("--points-per-scene", type=int, default=20000, help="keep at most this many cloud points")
    parser.add_argument("--no-images", action="store_true", help="do not store RGB / depth / instance images")
    parser.add_argument("--no-noise", action="store_true", help="perfect depth sensor")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--heldout-fraction", type=float, default=0.1,
                        help="share of (category, colour, relation) combinations held out for test_compositional")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    arguments = parser.parse_args(argv)
    try:
        config = GenerateConfig.from_options({
            "scenes": arguments.scenes, "seed": arguments.seed, "width": arguments.width, "height": arguments.height,
            "fov_deg": arguments.fov, "points_per_scene": arguments.points_per_scene,
            "save_images": not arguments.no_images, "sensor_noise": not arguments.no_noise,
            "val_fraction": arguments.val_fraction, "test_fraction": arguments.test_fraction,
            "heldout_fraction": arguments.heldout_fraction,
        })
        summary = generate_dataset(arguments.output, config, progress=not arguments.quiet)
    except ConfigError as error:
        print(f"threed-llm generate-data: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary['scenes']} scenes, {summary['annotations']} annotations to {arguments.output} "
          f"in {summary['seconds']:.1f} s ({summary['scenes_per_second']:.2f} scenes/s)")
    print("splits: " + ", ".join(f"{name} {count}" for name, count in sorted(summary["splits"].items())))
    print("tasks: " + ", ".join(f"{name} {count}" for name, count in sorted(summary["tasks"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
