"""Training data for single-image grounding: simulator RGB renders through many cameras.

Each frame draws a camera from the range of common robot cameras (horizontal field of view
60–120°, image sizes 320×240 to 1280×720) and renders a random scene of
``data.sim``. Rendering at 1280×720 would be slow and the network sees a 320×240
canvas anyway, so the scene is rendered directly at the canvas size with the camera fitted to
it (``projection.fit_to_canvas``: every intrinsic scaled, so geometry is exactly that of the
drawn camera seen through a resize). Renders are made less flat by random colour noise,
exposure and a colour cast (lighting varies; the texture is the simulator's).

The referred objects of a frame are its visible objects (enough pixels, centre inside the
image) whose "colour category" is unique in the scene; the colour is dropped at random where
the category alone is unique, so the model also learns "the bed".

The backbone is frozen, so its feature maps are computed once per frame and cached
(:class:`FeatureSet`); training then touches only the small trainable part.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from threed_llm_ros.data.sim.placement import SceneConfig, generate_scene
from threed_llm_ros.data.sim.render import ray_cast
from threed_llm_ros.data.sim.scene import Scene
from threed_llm_ros.data.sim.sensor import SensorConfig, apply_sensor_model
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.mono3d.model import Mono3DConfig
from threed_llm_ros.mono3d.projection import (
    DEFAULT_CAMERA_HEIGHT_M, box_to_targets, fit_to_canvas, level_camera, level_view, pitch_rotation,
    seen_by_tilted_camera,
)

IMAGE_SIZES: tuple[tuple[int, int], ...] = ((320, 240), (640, 480), (640, 360), (848, 480), (1024, 768), (1280, 720))
FOV_RANGE_DEG = (60.0, 120.0)
PITCH_RANGE_DEG = (-30.0, 0.0)  # optical axis above the horizon (negative: looking down), with ``tilt``
CAMERA_HEIGHT_RANGE_M = (0.4, 1.6)  # a small base's camera to a tall robot's head, with ``tilt``
MIN_VISIBLE_PIXELS = 60  # on the canvas
TEST_SEED_OFFSET = 1_000_000
CALIBRATION_SEED_OFFSET = 2_000_000  # held-out frames that set the presence threshold
CACHE_VERSION = 3  # 2: per-frame visible labels (for absent queries); 3: per-frame camera height
TILT_SPLIT_SUFFIX = "_tilt"  # cache names of splits rendered with ``tilt``
PITCH_ONLY_SPLIT_SUFFIX = "_tiltpitch"  # ... with ``tilt`` at the simulator's fixed camera height
DEFAULT_TRAIN_FRAMES, DEFAULT_TEST_FRAMES, DEFAULT_CALIBRATION_FRAMES = 2500, 300, 200


@dataclass(frozen=True)
class Referral:
    """One referred object: its category, colour (None: not said) and true box (camera gravity frame)."""

    category: str
    color: str | None
    box: OrientedBox


@dataclass
class Mono3DFrame:
    """One image on the canvas, the camera drawn for it, the camera as it sees the canvas, and referrals."""

    image: np.ndarray  # canvas_height × canvas_width × 3 uint8, image top-left, zero padding
    camera: CameraIntrinsics
    canvas_camera: CameraIntrinsics
    referrals: list[Referral]
    visible_labels: frozenset[tuple[str, str]] = frozenset()  # (colour, category) with any visible pixel
    pitch_deg: float = 0.0  # the tilted camera's pitch that was levelled out (0: a level camera)
    camera_height_m: float = DEFAULT_CAMERA_HEIGHT_M  # the camera's height above the floor


def draw_camera(rng: np.random.Generator) -> CameraIntrinsics:
    """A square-pixel camera with a random image size and horizontal field of view in FOV_RANGE_DEG."""
    width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    return CameraIntrinsics.from_field_of_view(width, height, float(rng.uniform(*FOV_RANGE_DEG)))


def on_canvas(image: np.ndarray, config: Mono3DConfig) -> np.ndarray:
    """The image at the top-left of a black canvas (it must already fit)."""
    canvas = np.zeros((config.canvas_height, config.canvas_width, 3), dtype=np.uint8)
    canvas[:image.shape[0], :image.shape[1]] = image[:config.canvas_height, :config.canvas_width, :3]
    return canvas


def image_to_canvas(image: np.ndarray, camera: CameraIntrinsics,
                    config: Mono3DConfig) -> tuple[np.ndarray, CameraIntrinsics]:
    """A real image resized onto the canvas, and the camera as it sees the canvas."""
    from PIL import Image

    if image.shape[:2] != (camera.height, camera.width):
        raise ConfigError("camera_info", f"image is {image.shape[1]}x{image.shape[0]} but the camera is "
                          f"{camera.width}x{camera.height}", "give the intrinsics of this image")
    _, fitted = fit_to_canvas(camera, config.canvas_width, config.canvas_height)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image[..., :3])).resize(
        (fitted.width, fitted.height), Image.BILINEAR))
    return on_canvas(resized, config), fitted


def camera_realism(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a real camera does to a flat-shaded render (training frames only): uneven light across the
    room (a linear ramp ×(1 ± 0.35) in a random direction), lens vignetting (up to −35 % in the corners)
    and optical / resizing blur (Gaussian, σ up to 1.2 canvas px). None of it tells the scene apart."""
    from PIL import Image, ImageFilter

    height, width = rgb.shape[:2]
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = (columns - width / 2) / (width / 2), (rows - height / 2) / (height / 2)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(-0.35, 0.35) * (x * np.cos(angle) + y * np.sin(angle)) / np.sqrt(2)
    light *= 1 - rng.uniform(0.0, 0.35) * (x * x + y * y) / 2
    shaded = np.clip(rgb.astype(np.float32) * light[..., None], 0, 255).astype(np.uint8)
    radius = float(rng.uniform(0.0, 1.2))
    return np.asarray(Image.fromarray(shaded).filter(ImageFilter.GaussianBlur(radius))) if radius > 0.2 else shaded


def draw_tilt(seed: int) -> tuple[float, float]:
    """The pitch (degrees, negative: looking down) and height (m) of a tilted frame's camera; its own
    random stream, so a frame's scene and camera are the same with and without tilt."""
    rng = np.random.default_rng([seed, 22])
    return float(rng.uniform(*PITCH_RANGE_DEG)), float(rng.uniform(*CAMERA_HEIGHT_RANGE_M))


def simulate_frame(seed: int, config: Mono3DConfig, realism: bool = False, tilt: bool = False,
                   fixed_height: bool = False, camera_height_m: float | None = None) -> Mono3DFrame:
    """A random scene through a random camera, rendered at the canvas size, with its referrals;
    ``realism`` adds :func:`camera_realism` (training frames; the test split stays as it was);
    ``tilt`` pitches the camera and draws its height (:func:`draw_tilt`; ``fixed_height``: the pitch
    only, at the simulator's 1.2 m), then levels the view (the module docstring): ``canvas_camera`` is
    then the level camera the boxes are measured in. ``camera_height_m`` puts the camera at that height
    instead (level or tilted)."""
    rng = np.random.default_rng([seed, 20])
    camera = draw_camera(rng)
    fov = float(np.degrees(2 * np.arctan(camera.width / 2 / camera.fx)))
    pitch, height = draw_tilt(seed) if tilt else (0.0, None)
    height = camera_height_m if camera_height_m is not None else None if fixed_height else height
    scene_config = SceneConfig(view_fov_deg=fov) if height is None else SceneConfig(view_fov_deg=fov,
                                                                                    camera_height_m=height)
    scene = generate_scene(seed, scene_config)
    _, canvas_camera = fit_to_canvas(camera, config.canvas_width, config.canvas_height)
    seen = None
    if tilt:
        level_from_optical = pitch_rotation(pitch)
        tilted_camera, canvas_camera = canvas_camera, level_camera(canvas_camera, level_from_optical)
        seen = seen_by_tilted_camera(canvas_camera, tilted_camera, level_from_optical)
    cast = ray_cast(scene, canvas_camera)
    sensor = SensorConfig(rgb_noise_std=float(rng.uniform(1.0, 6.0)))
    rgb, _ = apply_sensor_model(cast, sensor, seed)
    gain = rng.uniform(0.65, 1.35) * rng.uniform(0.9, 1.1, size=3)  # exposure and a colour cast
    rgb = np.clip(rgb.astype(np.float32) * gain.astype(np.float32), 0, 255).astype(np.uint8)
    if realism:
        rgb = camera_realism(rgb, np.random.default_rng([seed, 21]))
    instances = cast.instance_mask
    if seen is not None:
        rgb = rgb * seen[..., None].astype(np.uint8)
        instances = np.where(seen, instances, -1)
    visible = np.bincount(instances[instances >= 0], minlength=len(scene.objects))
    labels = [(obj.color, obj.category) for obj in scene.objects]
    categories = [obj.category for obj in scene.objects]
    referrals = []
    for index, (obj, box) in enumerate(zip(scene.objects, scene.boxes_in_camera())):
        if visible[index] < MIN_VISIBLE_PIXELS or labels.count(labels[index]) > 1:
            continue
        u, v = box_to_targets(box, canvas_camera)["uv"]
        if not (0 <= u < canvas_camera.width and 0 <= v < canvas_camera.height):
            continue
        if seen is not None and not seen[int(v), int(u)]:
            continue
        color = None if categories.count(obj.category) == 1 and rng.random() < 0.5 else obj.color
        referrals.append(Referral(obj.category, color, box))
    seen_labels = frozenset(label for label, pixels in zip(labels, visible) if pixels > 0)
    return Mono3DFrame(on_canvas(rgb, config), camera, canvas_camera, referrals, seen_labels, pitch,
                       scene_config.camera_height_m)


def tilted_camera_rgb(scene: Scene, camera: CameraIntrinsics, level_from_optical: np.ndarray) -> np.ndarray:
    """What a tilted ``camera`` sees of ``scene`` (noise-free RGB): the simulator renders level cameras
    only, so a level view twice the size around :func:`~projection.level_camera` is rendered and turned
    into the tilted camera (a pure rotation is a homography; parts of the view the level render does
    not cover stay black). For tests and demos of levelling; training renders the levelled view directly."""
    level = level_camera(camera, level_from_optical)
    wide = replace(level, cx=level.cx + camera.width / 2, cy=level.cy + camera.height / 2,
                   width=2 * camera.width, height=2 * camera.height)
    rgb = np.clip(ray_cast(scene, wide).color, 0, 255).astype(np.uint8)
    return level_view(rgb, wide, np.asarray(level_from_optical).T, output=camera)


@dataclass
class FeatureSet:
    """Cached backbone features of frames and the flattened referrals with their targets."""

    local: torch.Tensor  # (F, 152, h, w) float16
    global_: torch.Tensor  # (F, 320, h', w') float16
    canvas_cameras: list[CameraIntrinsics]
    cameras: list[CameraIntrinsics]
    image_index: torch.Tensor  # (Q,) long
    category: torch.Tensor  # (Q,) long
    color: torch.Tensor  # (Q,) long
    targets: dict[str, torch.Tensor]  # per query: uv, depth_canonical, center_optical, size, yaw
    boxes: list[OrientedBox]
    visible: torch.Tensor  # (F, categories, colours) bool: label seen (colour 0 = "any": the category in any colour)
    camera_height: torch.Tensor  # (F,) float: each frame's camera height above the floor (m)

    def __len__(self) -> int:
        return int(self.image_index.numel())

    def save(self, path: str | Path) -> None:
        """Write to one torch file (a cache: no code runs on load)."""
        state = {key: getattr(self, key)
                 for key in ("local", "global_", "image_index", "category", "color", "targets", "visible",
                             "camera_height")}
        state["canvas_cameras"] = [_camera_tuple(k) for k in self.canvas_cameras]
        state["cameras"] = [_camera_tuple(k) for k in self.cameras]
        state["boxes"] = [box.to_array().tolist() for box in self.boxes]
        torch.save(state, str(path))

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        """Read a file written by :meth:`save`."""
        state = torch.load(str(path), weights_only=True)
        state["canvas_cameras"] = [CameraIntrinsics(*values) for values in state["canvas_cameras"]]
        state["cameras"] = [CameraIntrinsics(*values) for values in state["cameras"]]
        state["boxes"] = [OrientedBox.from_array(np.asarray(values)) for values in state["boxes"]]
        return cls(**state)


def cache_file(cache: Path, split: str, frames: int) -> Path:
    """Where the features of ``frames`` frames of ``split`` are cached (the format version in the name)."""
    return Path(cache) / f"{split}_{frames}_v{CACHE_VERSION}.pt"


def _camera_tuple(camera: CameraIntrinsics) -> list:
    return [camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height]


def build_feature_set(frames: Iterable[Mono3DFrame], backbone: torch.nn.Module, config: Mono3DConfig,
                      batch_size: int = 8) -> FeatureSet:
    """Run the frozen backbone over the frames (in batches) and flatten their referrals."""
    frames = list(frames)
    local_maps, global_maps = [], []
    for start in range(0, len(frames), batch_size):
        images = np.stack([frame.image for frame in frames[start:start + batch_size]])
        local, global_ = backbone(torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2))
        local_maps.append(local.half())
        global_maps.append(global_.half())
    image_index, category, color, boxes = [], [], [], []
    targets: dict[str, list[np.ndarray]] = {}
    visible = torch.zeros((len(frames), len(config.categories), len(config.colors)), dtype=torch.bool)
    for frame_index, frame in enumerate(frames):
        for seen_color, seen_category in frame.visible_labels:
            if seen_category in config.categories:
                row = config.categories.index(seen_category)
                visible[frame_index, row, 0] = True
                if seen_color in config.colors:
                    visible[frame_index, row, config.colors.index(seen_color)] = True
        for referral in frame.referrals:
            image_index.append(frame_index)
            category.append(config.categories.index(referral.category))
            color.append(config.colors.index(referral.color) if referral.color in config.colors else 0)
            boxes.append(referral.box)
            for key, value in box_to_targets(referral.box, frame.canvas_camera, config.canonical_focal_px).items():
                targets.setdefault(key, []).append(value)
    return FeatureSet(
        local=torch.cat(local_maps), global_=torch.cat(global_maps),
        canvas_cameras=[frame.canvas_camera for frame in frames], cameras=[frame.camera for frame in frames],
        image_index=torch.tensor(image_index, dtype=torch.long), category=torch.tensor(category, dtype=torch.long),
        color=torch.tensor(color, dtype=torch.long),
        targets={key: torch.tensor(np.stack(values), dtype=torch.float32) for key, values in targets.items()},
        boxes=boxes, visible=visible,
        camera_height=torch.tensor([frame.camera_height_m for frame in frames], dtype=torch.float32),
    )


def simulated_feature_set(seeds: Iterable[int], backbone: torch.nn.Module, config: Mono3DConfig,
                          progress: bool = False, chunk: int = 32, realism: bool = False,
                          tilt: bool = False, fixed_height: bool = False,
                          camera_height_m: float | None = None) -> FeatureSet:
    """Render the frames of ``seeds`` (with ``realism``, ``tilt`` and ``camera_height_m``: see
    :func:`simulate_frame`) and cache their features (chunk by chunk, to bound memory)."""
    from tqdm import tqdm

    seeds = list(seeds)
    parts = []
    bar = tqdm(total=len(seeds), desc="render+features", unit="frame", disable=not progress)
    for start in range(0, len(seeds), chunk):
        frames = [simulate_frame(seed, config, realism, tilt, fixed_height, camera_height_m)
                  for seed in seeds[start:start + chunk]]
        parts.append(build_feature_set(frames, backbone, config))
        bar.update(len(frames))
    bar.close()
    return concatenate(parts)


def concatenate(parts: list[FeatureSet]) -> FeatureSet:
    """One feature set from several (image indices renumbered)."""
    offsets = np.cumsum([0] + [part.local.shape[0] for part in parts[:-1]])
    return FeatureSet(
        local=torch.cat([part.local for part in parts]), global_=torch.cat([part.global_ for part in parts]),
        canvas_cameras=[k for part in parts for k in part.canvas_cameras],
        cameras=[k for part in parts for k in part.cameras],
        image_index=torch.cat([part.image_index + int(offset) for part, offset in zip(parts, offsets)]),
        category=torch.cat([part.category for part in parts]), color=torch.cat([part.color for part in parts]),
        targets={key: torch.cat([part.targets[key] for part in parts]) for key in parts[0].targets},
        boxes=[box for part in parts for box in part.boxes],
        visible=torch.cat([part.visible for part in parts]),
        camera_height=torch.cat([part.camera_height for part in parts]),
    )


def subset(features: FeatureSet, frame_indices: torch.Tensor) -> tuple[FeatureSet, torch.Tensor]:
    """The frames ``frame_indices`` and their referrals (renumbered); also the referral positions taken."""
    lookup = torch.full((features.local.shape[0],), -1, dtype=torch.long)
    lookup[frame_indices] = torch.arange(len(frame_indices))
    taken = torch.nonzero(lookup[features.image_index] >= 0)[:, 0]
    return replace(
        features, local=features.local[frame_indices], global_=features.global_[frame_indices],
        canvas_cameras=[features.canvas_cameras[i] for i in frame_indices.tolist()],
        cameras=[features.cameras[i] for i in frame_indices.tolist()],
        image_index=lookup[features.image_index[taken]], category=features.category[taken],
        color=features.color[taken], targets={key: value[taken] for key, value in features.targets.items()},
        boxes=[features.boxes[i] for i in taken.tolist()], visible=features.visible[frame_indices],
        camera_height=features.camera_height[frame_indices],
    ), taken


def draw_absent_queries(visible: torch.Tensor, generator: torch.Generator,
                        per_frame: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries for labels *not* seen in each frame (image index, category, colour): the negatives that
    teach the presence output to say "not seen". Half are hard: a category that is seen, in a colour
    that is not; the rest name a category not seen at all (with or without a colour). Labels with any
    visible pixel are never drawn, so a barely visible object is not called absent."""
    frames, categories, colors = visible.shape
    image_index, category, color = [], [], []
    for frame in range(frames):
        seen = visible[frame]
        for _ in range(per_frame):
            hard = bool(torch.rand(1, generator=generator) < 0.5)
            choices = torch.nonzero(~seen[:, 1:]) if hard else torch.nonzero(~seen[:, :1])
            if hard:
                choices = choices[seen[choices[:, 0], 0]]  # seen categories only
                choices[:, 1] += 1
            if len(choices) == 0:
                continue
            row, column = choices[int(torch.randint(len(choices), (1,), generator=generator))].tolist()
            if not hard and bool(torch.rand(1, generator=generator) < 0.5):
                column = int(torch.randint(1, colors, (1,), generator=generator))
            image_index.append(frame)
            category.append(row)
            color.append(column)
    as_tensor = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    return as_tensor(image_index), as_tensor(category), as_tensor(color)
