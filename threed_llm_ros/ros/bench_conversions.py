"""``threed-llm bench-conversions``: time the message conversions a node does per frame.

For one synthetic 640x480 RGB-D frame (a tilted floor and a box, 5% missing depth) it
reports the median, minimum and maximum over ``--repeats`` of each conversion, prints a
table and optionally writes JSON with a description of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from threed_llm_ros.geometry.camera import CameraIntrinsics, depth_to_points
from threed_llm_ros.ros.conversions import (
    array_to_image,
    arrays_to_pointcloud2,
    camera_info_to_intrinsics,
    depth_image_to_metres,
    depth_metres_to_image,
    depth_to_pointcloud2,
    image_to_rgb,
    intrinsics_to_camera_info,
    pointcloud2_to_arrays,
)


def synthetic_frame(width: int, height: int, seed: int) -> dict[str, Any]:
    """Depth (metres), colour and intrinsics of a simple scene: a floor plane and a box."""
    rng = np.random.default_rng(seed)
    intrinsics = CameraIntrinsics.from_field_of_view(width, height, 69.0)
    rows = np.arange(height, dtype=np.float32)[:, None]
    columns = np.arange(width, dtype=np.float32)[None, :]
    depth = np.broadcast_to(1.0 + 3.0 * (1.0 - rows / height), (height, width)).astype(np.float32)
    box = (np.abs(columns - width / 2) < width / 6) & (np.abs(rows - height / 2) < height / 6)
    depth = np.where(box, np.float32(1.2), depth)
    depth = depth + rng.normal(0.0, 0.003, depth.shape).astype(np.float32)
    depth[rng.random(depth.shape) < 0.05] = np.nan
    color = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return {"depth": depth, "color": color, "intrinsics": intrinsics}


def time_call(function: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median/min/max wall time in milliseconds over ``repeats`` calls (after one warm-up)."""
    function()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        durations.append((time.perf_counter() - start) * 1000.0)
    return {
        "median_ms": statistics.median(durations),
        "min_ms": min(durations),
        "max_ms": max(durations),
    }


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def run_benchmarks(width: int, height: int, repeats: int, seed: int) -> dict[str, Any]:
    """Time every conversion on one frame; returns the JSON-ready result."""
    frame = synthetic_frame(width, height, seed)
    depth_m, color, intrinsics = frame["depth"], frame["color"], frame["intrinsics"]
    depth_msg = depth_metres_to_image(depth_m, "16UC1", frame_id="camera_depth_optical_frame")
    color_msg = array_to_image(color[..., ::-1].copy(), "bgr8", frame_id="camera_depth_optical_frame")
    info_msg = intrinsics_to_camera_info(intrinsics, frame_id="camera_depth_optical_frame")
    full_grid = np.ones((height, width), np.float32) * 2.0
    xyz, _ = depth_to_points(full_grid, intrinsics)
    rgb = color.reshape(-1, 3)
    cloud_msg = arrays_to_pointcloud2(xyz, rgb, rgb_layout="rgb_float32")
    organized_xyz, _ = depth_to_points(depth_m, intrinsics, organized=True)
    organized_msg = arrays_to_pointcloud2(organized_xyz, color, rgb_layout="rgb_float32")

    def depth_to_numpy() -> Any:
        return depth_to_points(
            depth_image_to_metres(depth_msg), camera_info_to_intrinsics(info_msg), color=image_to_rgb(color_msg)
        )

    cases: list[tuple[str, Callable[[], Any]]] = [
        ("PointCloud2 -> numpy (XYZ + packed float rgb)", lambda: pointcloud2_to_arrays(cloud_msg)),
        ("PointCloud2 -> numpy (organised, NaN kept)", lambda: pointcloud2_to_arrays(organized_msg, organized=True)),
        ("PointCloud2 -> numpy (organised, NaN dropped)", lambda: pointcloud2_to_arrays(organized_msg)),
        ("numpy -> PointCloud2 (XYZ + packed float rgb)", lambda: arrays_to_pointcloud2(xyz, rgb)),
        ("depth 16UC1 Image -> metres", lambda: depth_image_to_metres(depth_msg)),
        ("metres -> depth 16UC1 Image", lambda: depth_metres_to_image(depth_m)),
        ("colour bgr8 Image -> RGB array", lambda: image_to_rgb(color_msg)),
        ("depth + bgr8 + CameraInfo -> numpy points", depth_to_numpy),
        ("depth + bgr8 + CameraInfo -> PointCloud2", lambda: depth_to_pointcloud2(depth_msg, info_msg, color_msg)),
    ]
    results = {name: time_call(function, repeats) for name, function in cases}
    return {
        "benchmark": "conversions",
        "frame": {"width": width, "height": height, "points": width * height},
        "repeats": repeats,
        "machine": machine_description(),
        "results": results,
    }


def format_table(report: dict[str, Any]) -> str:
    """The results as a fixed-width text table."""
    name_width = max(len(name) for name in report["results"])
    lines = [
        f"{report['frame']['width']}x{report['frame']['height']} frame, {report['repeats']} repeats, "
        f"{report['machine']['cpu_count']} CPUs, numpy {report['machine']['numpy']}",
        f"{'conversion'.ljust(name_width)}  {'median ms':>10}  {'min ms':>8}  {'max ms':>8}",
    ]
    for name, timing in report["results"].items():
        lines.append(
            f"{name.ljust(name_width)}  {timing['median_ms']:10.2f}  {timing['min_ms']:8.2f}  {timing['max_ms']:8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the conversion benchmark; print a table and optionally write JSON."""
    parser = argparse.ArgumentParser(
        prog="threed-llm bench-conversions",
        description="Time PointCloud2, Image and depth conversions for one RGB-D frame.",
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per conversion (default 30)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if arguments.repeats < 1 or arguments.width < 1 or arguments.height < 1:
        parser.error("--repeats, --width and --height must be positive")
    report = run_benchmarks(arguments.width, arguments.height, arguments.repeats, arguments.seed)
    print(format_table(report))
    if arguments.output is not None:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
