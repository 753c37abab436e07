"""``threed-llm sim``: render a scene for a seed or a JSON spec, print what it holds, save arrays and previews."""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from threed_llm_ros.data.catalog import COLORS, ROOM_TYPE_NAMES
from threed_llm_ros.data.sim.frames import RenderedFrame, render, save_frame
from threed_llm_ros.data.sim.placement import SceneConfig, generate_scene
from threed_llm_ros.data.sim.scene import Scene, load_scene, save_scene
from threed_llm_ros.data.sim.sensor import SensorConfig
from threed_llm_ros.errors import ConfigError
from threed_llm_ros.geometry.camera import CameraIntrinsics

def _mask_preview(mask: np.ndarray, scene: Scene) -> np.ndarray:
    """Instance mask with each object in its own colour; room structure dark grey."""
    palette = np.array([COLORS[obj.color] for obj in scene.objects] + [(40, 40, 40)], dtype=np.uint8)
    return palette[mask]


def preview_figure(frame: RenderedFrame) -> Any:
    """A matplotlib figure: the colour image, the sensor depth (with a metre scale) and the instance mask
    side by side, each panel titled."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    height, width = frame.depth_m.shape
    figure = Figure(figsize=(15, 4.2 * height / width + 0.8), constrained_layout=True)
    axes = figure.subplots(1, 3)
    axes[0].imshow(frame.rgb)
    axes[0].set_title(f"colour image ({width}×{height})")
    depth = np.ma.masked_invalid(frame.depth_m)
    colour_map = matplotlib.colormaps["viridis"].with_extremes(bad="black")
    shown = axes[1].imshow(depth, cmap=colour_map, vmin=0.0, vmax=float(np.nanmax(frame.depth_clean_m)))
    axes[1].set_title("sensor depth (black: no return)")
    figure.colorbar(shown, ax=axes[1], label="depth (m)", shrink=0.9)
    axes[2].imshow(_mask_preview(frame.instance_mask, frame.scene))
    axes[2].set_title(f"instance mask ({len(frame.objects)} objects; room: grey)")
    for panel in axes:
        panel.set_axis_off()
    return figure


def save_preview(frame: RenderedFrame, path: str | Path) -> None:
    """The :func:`preview_figure` as a PNG."""
    preview_figure(frame).savefig(path, dpi=100)


def summary(frame: RenderedFrame) -> str:
    """A human-readable table of the frame: room, camera, objects and their boxes, sizes."""
    scene = frame.scene
    lines = [
        f"room: {scene.room_type or 'custom'} {scene.room.length:.2f} x {scene.room.width:.2f} x {scene.room.height:.2f} m; "
        f"camera at ({', '.join(f'{value:.2f}' for value in scene.camera.position)}) yaw {math.degrees(scene.camera.yaw):+.1f} deg",
        f"image: {frame.intrinsics.width}x{frame.intrinsics.height}, fx={frame.intrinsics.fx:.1f} fy={frame.intrinsics.fy:.1f}; "
        f"valid depth {np.isfinite(frame.depth_m).mean():.1%}; cloud {len(frame.points)} points",
        f"{len(frame.objects)} objects (boxes in the camera gravity frame: x forward, y left, z up):",
        f"  {'#':>2}  {'label':22s} {'on':>3}  {'center x,y,z (m)':>22}  {'size l,w,h (m)':>18}  {'yaw':>6}  {'pixels':>7}",
    ]
    for obj in frame.objects:
        center = ",".join(f"{value:+.2f}" for value in obj.box.center)
        size = ",".join(f"{value:.2f}" for value in obj.box.size)
        on = "-" if obj.on is None else str(obj.on)
        lines.append(
            f"  {obj.index:>2}  {obj.label:22s} {on:>3}  {center:>22}  {size:>18}  "
            f"{math.degrees(obj.box.yaw):+6.0f}  {obj.visible_pixels:>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``threed-llm sim``: render a scene for a seed or a JSON spec and print or save it."""
    parser = argparse.ArgumentParser(prog="threed-llm sim", description="Render a simulated RGB-D frame.")
    parser.add_argument("--seed", type=int, default=0, help="scene and noise seed (default 0)")
    parser.add_argument("--spec", type=Path, help="render this scene JSON instead of a random scene")
    parser.add_argument("--room-type", choices=ROOM_TYPE_NAMES, help="random scenes of this room type only")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fov", type=float, default=60.0, help="horizontal field of view in degrees")
    parser.add_argument("--camera-height", type=float, default=1.2, help="camera height above the floor (m)")
    parser.add_argument("--no-noise", action="store_true", help="perfect sensor (no noise, dropout or edge effects)")
    parser.add_argument("--save", type=Path, help="write all arrays to this .npz")
    parser.add_argument("--png", type=Path, help="write an RGB | depth | mask preview PNG")
    parser.add_argument("--save-spec", type=Path, help="write the scene as JSON (to edit and re-render)")
    arguments = parser.parse_args(argv)
    try:
        if arguments.width <= 0 or arguments.height <= 0:
            raise ConfigError("--width/--height", f"{arguments.width}x{arguments.height} is empty", "use positive sizes")
        if not 0 < arguments.fov < 180:
            raise ConfigError("--fov", f"{arguments.fov} is not in (0, 180)", "use degrees between 0 and 180")
        intrinsics = CameraIntrinsics.from_field_of_view(arguments.width, arguments.height, arguments.fov)
        if arguments.spec is not None:
            scene = load_scene(arguments.spec)
        else:
            config = SceneConfig(camera_height_m=arguments.camera_height)
            if arguments.room_type:
                config = replace(config, room_types=(arguments.room_type,))
            scene = generate_scene(arguments.seed, config)
        sensor = SensorConfig(enabled=not arguments.no_noise)
        started = time.perf_counter()
        frame = render(scene, intrinsics, sensor, arguments.seed)
        elapsed = time.perf_counter() - started
    except ConfigError as error:
        print(f"threed-llm sim: {error}", file=sys.stderr)
        return 2
    print(summary(frame))
    print(f"rendered in {elapsed * 1000:.0f} ms")
    if arguments.save:
        save_frame(frame, arguments.save)
        print(f"wrote {arguments.save}")
    if arguments.png:
        save_preview(frame, arguments.png)
        print(f"wrote {arguments.png}")
    if arguments.save_spec:
        save_scene(scene, arguments.save_spec)
        print(f"wrote {arguments.save_spec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
