"""3D IoU of yaw-rotated boxes: exact footprint-polygon intersection times height overlap."""

from __future__ import annotations

import numpy as np

from threed_llm_ros.geometry.boxes import OrientedBox


def _footprint(box: OrientedBox) -> np.ndarray:
    """The box's footprint as a counter-clockwise 4×2 polygon (x, y)."""
    return box.corners()[:4, :2]


def _clip_polygon(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland–Hodgman clipping of a polygon by a convex counter-clockwise polygon."""
    output = subject
    for index in range(len(clip)):
        if len(output) == 0:
            break
        edge_start, edge_end = clip[index], clip[(index + 1) % len(clip)]
        edge = edge_end - edge_start
        # Signed area test: > 0 means left of the edge (inside for a CCW clip polygon).
        side = edge[0] * (output[:, 1] - edge_start[1]) - edge[1] * (output[:, 0] - edge_start[0])
        inside = side >= -1e-12
        clipped: list[np.ndarray] = []
        for current in range(len(output)):
            following = (current + 1) % len(output)
            if inside[current]:
                clipped.append(output[current])
            if inside[current] != inside[following]:
                t = side[current] / (side[current] - side[following])
                clipped.append(output[current] + t * (output[following] - output[current]))
        output = np.asarray(clipped).reshape(-1, 2)
    return output


def _polygon_area(polygon: np.ndarray) -> float:
    if len(polygon) < 3:
        return 0.0
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def rotated_box_iou(first: OrientedBox, second: OrientedBox) -> float:
    """Intersection over union of two yaw-rotated 3D boxes (0 for degenerate boxes)."""
    volume_first = float(np.prod(first.size))
    volume_second = float(np.prod(second.size))
    if volume_first <= 0 or volume_second <= 0:
        return 0.0
    bottom = max(first.center[2] - first.size[2] / 2, second.center[2] - second.size[2] / 2)
    top = min(first.center[2] + first.size[2] / 2, second.center[2] + second.size[2] / 2)
    height = max(0.0, top - bottom)
    if height == 0.0:
        return 0.0
    overlap_area = _polygon_area(_clip_polygon(_footprint(first), _footprint(second)))
    intersection = overlap_area * height
    union = volume_first + volume_second - intersection
    return float(intersection / union) if union > 0 else 0.0
