"""The noise-free render: vectorised ray casting of a scene's primitives into colour, depth and instances."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from threed_llm_ros.data.catalog import COLORS
from threed_llm_ros.data.shapes import Cuboid, Cylinder, build_shape
from threed_llm_ros.data.sim.scene import Scene
from threed_llm_ros.geometry.camera import CameraIntrinsics
from threed_llm_ros.geometry.frames import yaw_rotation

@dataclass(frozen=True)
class Primitive:
    """A primitive in the camera gravity frame, ready for ray casting."""

    is_cylinder: bool
    object_index: int
    center: np.ndarray  # box centre, or (x, y, middle z) of a cylinder
    half: np.ndarray  # box half extents, or (radius, radius, half height)
    yaw: float
    color: np.ndarray  # RGB 0-255 as float
    salt: int


def _scene_primitives(scene: Scene) -> list[Primitive]:
    """All object primitives of the scene in the camera gravity frame."""
    primitives = []
    for index, obj in enumerate(scene.objects):
        bottom = scene.camera.world_to_camera(np.asarray(obj.position)[None])[0]
        yaw = obj.yaw - scene.camera.yaw
        rotation = yaw_rotation(yaw)
        base_color = np.asarray(COLORS[obj.color], dtype=np.float64)
        for part_index, part in enumerate(build_shape(obj.category, obj.size)):
            color = np.clip(base_color * part.shade, 0.0, 255.0)
            salt = (index * 7919 + part_index * 104729 + 17) & 0x7FFFFFFF
            if isinstance(part, Cuboid):
                center = bottom + rotation @ np.asarray(part.center)
                primitives.append(Primitive(False, index, center, np.asarray(part.size) / 2, yaw, color, salt))
            else:
                assert isinstance(part, Cylinder)
                xy = bottom[:2] + rotation[:2, :2] @ np.asarray(part.center_xy)
                z_mid = bottom[2] + (part.z_min + part.z_max) / 2
                half = np.array([part.radius, part.radius, (part.z_max - part.z_min) / 2])
                primitives.append(Primitive(True, index, np.array([xy[0], xy[1], z_mid]), half, yaw, color, salt))
    return primitives


def _slab_interval(
    center: np.ndarray, half: np.ndarray, yaw: float, ray_y: np.ndarray, ray_z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit ray parameters of an oriented box for rays (1, ray_y[col], ray_z[row]) from the origin.

    The camera is level, so the x/y slabs depend only on the column and the z slab only on
    the row: the work is a few 1-D operations and two full-size ones.
    """
    c, s = math.cos(yaw), math.sin(yaw)
    origin = -np.array([c * center[0] + s * center[1], -s * center[0] + c * center[1], center[2]])
    direction_x = c + s * ray_y
    direction_y = -s + c * ray_y
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = ((-half[0] - origin[0]) / direction_x, (half[0] - origin[0]) / direction_x)
        ty = ((-half[1] - origin[1]) / direction_y, (half[1] - origin[1]) / direction_y)
        tz = ((-half[2] - origin[2]) / ray_z, (half[2] - origin[2]) / ray_z)
    near_xy = np.maximum(np.minimum(*tx), np.minimum(*ty))
    far_xy = np.minimum(np.maximum(*tx), np.maximum(*ty))
    near = np.maximum(near_xy[None, :], np.minimum(*tz)[:, None])
    far = np.minimum(far_xy[None, :], np.maximum(*tz)[:, None])
    return near, far


def _cylinder_hits(primitive: Primitive, ray_y: np.ndarray, ray_z: np.ndarray) -> np.ndarray:
    """Nearest positive hit parameter (inf for a miss) of a vertical cylinder."""
    cx, cy, cz = primitive.center
    radius, half_height = primitive.half[0], primitive.half[2]
    z_min, z_max = cz - half_height, cz + half_height
    a = 1.0 + ray_y * ray_y
    b = cx + cy * ray_y
    discriminant = b * b - a * (cx * cx + cy * cy - radius * radius)
    t_side = (b - np.sqrt(np.maximum(discriminant, 0.0))) / a
    side_ok_columns = (discriminant >= 0) & (t_side > 1e-6)
    z_side = t_side[None, :] * ray_z[:, None]
    t = np.where(side_ok_columns[None, :] & (z_side >= z_min) & (z_side <= z_max), t_side[None, :], np.inf)
    # The one cap that faces the camera (none when the camera is level with the side).
    cap_z = z_max if z_max < 0 else (z_min if z_min > 0 else None)
    if cap_z is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            t_cap = cap_z / ray_z
            offset_x = t_cap[:, None] - cx
            offset_y = t_cap[:, None] * ray_y[None, :] - cy
            cap_ok = (t_cap > 1e-6)[:, None] & (offset_x * offset_x + offset_y * offset_y <= radius * radius)
        t = np.minimum(t, np.where(cap_ok, t_cap[:, None], np.inf))
    return t


def _primitive_hits(primitive: Primitive, ray_y: np.ndarray, ray_z: np.ndarray) -> np.ndarray:
    if primitive.is_cylinder:
        return _cylinder_hits(primitive, ray_y, ray_z)
    near, far = _slab_interval(primitive.center, primitive.half, primitive.yaw, ray_y, ray_z)
    return np.where((near <= far) & (near > 1e-6), near, np.inf)


def pixel_rectangle(primitive: Primitive, intrinsics: CameraIntrinsics) -> tuple[int, int, int, int] | None:
    """Rows/columns (v0, v1, u0, u1) that can see the primitive; None if it is behind the camera."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    half = primitive.half
    corners = (signs * half) @ yaw_rotation(0.0 if primitive.is_cylinder else primitive.yaw).T + primitive.center
    forward = corners[:, 0]
    if forward.max() <= 1e-6:
        return None
    if forward.min() <= 1e-3:
        return 0, intrinsics.height, 0, intrinsics.width
    u = intrinsics.cx - intrinsics.fx * corners[:, 1] / forward
    v = intrinsics.cy - intrinsics.fy * corners[:, 2] / forward
    u0, u1 = max(int(math.floor(u.min())) - 1, 0), min(int(math.ceil(u.max())) + 2, intrinsics.width)
    v0, v1 = max(int(math.floor(v.min())) - 1, 0), min(int(math.ceil(v.max())) + 2, intrinsics.height)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def _hash_noise(cells: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) for integer 3-D cells (N×3)."""
    h = (cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663) ^ (cells[:, 2] * 83492791) ^ salt
    h = h & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return h.astype(np.float64) / 4294967296.0


@dataclass
class RayCast:
    """The noise-free render: what a perfect sensor sees."""

    intrinsics: CameraIntrinsics
    depth_m: np.ndarray  # H×W float32, optical z of the nearest surface (always hit: the room is closed)
    color: np.ndarray  # H×W×3 float32, shaded colour 0-255
    instance_mask: np.ndarray  # H×W int32, object index or -1 for room structure
    incidence_cos: np.ndarray  # H×W float32, |cos| of the angle between the ray and the surface normal


# Light from above and a little to the side, in the world frame; plus a camera headlight.
_LIGHT_DIRECTION = np.array([0.35, -0.25, 1.0]) / np.linalg.norm([0.35, -0.25, 1.0])
_AMBIENT, _DIFFUSE, _HEADLIGHT = 0.3, 0.45, 0.35
_TEXTURE_CELL_M, _OBJECT_TEXTURE, _ROOM_TEXTURE = 0.03, 0.06, 0.025


def ray_cast(scene: Scene, intrinsics: CameraIntrinsics) -> RayCast:
    """Render the scene with a perfect pinhole sensor: colour, depth, instance mask."""
    height, width = intrinsics.height, intrinsics.width
    # Gravity-frame ray directions (1, ray_y, ray_z); the ray parameter is the optical depth.
    ray_y = -(np.arange(width, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    ray_z = -(np.arange(height, dtype=np.float64) - intrinsics.cy) / intrinsics.fy

    room = scene.room
    room_center = scene.camera.world_to_camera(np.array([[room.length / 2, room.width / 2, room.height / 2]]))[0]
    room_half = np.array([room.length, room.width, room.height]) / 2
    room_yaw = -scene.camera.yaw
    _, room_exit = _slab_interval(room_center, room_half, room_yaw, ray_y, ray_z)
    best_t = np.where(np.isfinite(room_exit) & (room_exit > 0), room_exit, np.inf)
    best_id = np.full((height, width), -1, dtype=np.int32)

    primitives = _scene_primitives(scene)
    rectangles = [pixel_rectangle(primitive, intrinsics) for primitive in primitives]
    for index, (primitive, rectangle) in enumerate(zip(primitives, rectangles)):
        if rectangle is None:
            continue
        v0, v1, u0, u1 = rectangle
        t = _primitive_hits(primitive, ray_y[u0:u1], ray_z[v0:v1])
        region_t = best_t[v0:v1, u0:u1]
        closer = t < region_t
        region_t[closer] = t[closer]
        best_id[v0:v1, u0:u1][closer] = index

    rays = _Rays(ray_y, ray_z, width, best_t.ravel(), _LIGHT_DIRECTION @ yaw_rotation(scene.camera.yaw),
                 np.zeros((height * width, 3), dtype=np.float32), np.zeros(height * width, dtype=np.float32))
    for index, (primitive, rectangle) in enumerate(zip(primitives, rectangles)):
        if rectangle is None:
            continue
        v0, v1, u0, u1 = rectangle
        rows, columns = np.nonzero(best_id[v0:v1, u0:u1] == index)
        if rows.size:
            _shade_primitive(rays, primitive, (rows + v0) * width + (columns + u0))
    pixels = np.flatnonzero(best_id == -1)
    if pixels.size:
        local = rays.hit_points(pixels, room_center, room_yaw)
        nx, ny, nz, axis, side = _box_normals(local, room_half, room_yaw, inward=True)  # seen from inside
        surface = np.where(axis == 2, np.where(side < 0, 0, 1), 2)  # floor, ceiling, wall
        palette = np.array([room.floor_color, room.ceiling_color, room.wall_color], dtype=np.float64)
        texture = _texture_noise(*local, 2 * _TEXTURE_CELL_M, _ROOM_TEXTURE, 991)
        rays.shade(pixels, (nx, ny, nz), palette[surface], texture)

    object_of_primitive = np.array([primitive.object_index for primitive in primitives] + [-1], dtype=np.int32)
    return RayCast(
        intrinsics=intrinsics,
        depth_m=best_t.astype(np.float32),
        color=rays.color.reshape(height, width, 3),
        instance_mask=object_of_primitive[best_id],
        incidence_cos=rays.incidence.reshape(height, width),
    )


# Per-pixel work below is written component by component: no BLAS calls, whose thread pools
# stall on a loaded machine.


@dataclass
class _Rays:
    """One render's rays (gravity-frame directions (1, ray_y, ray_z), nearest hit depth per flat
    pixel), the light in the camera gravity frame, and the colour and incidence being filled."""

    ray_y: np.ndarray
    ray_z: np.ndarray
    width: int
    flat_t: np.ndarray
    light: np.ndarray
    color: np.ndarray  # (H*W, 3) float32
    incidence: np.ndarray  # (H*W,) float32

    def hit_points(self, pixels: np.ndarray, center: np.ndarray,
                   yaw: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hit points of the given flat pixel indices in a frame centred at ``center`` turned by ``yaw``."""
        t = self.flat_t[pixels]
        rows, columns = np.divmod(pixels, self.width)
        x, y, z = t - center[0], t * self.ray_y[columns] - center[1], t * self.ray_z[rows] - center[2]
        c, s = math.cos(yaw), math.sin(yaw)
        return c * x + s * y, -s * x + c * y, z

    def shade(self, pixels: np.ndarray, normals: tuple[np.ndarray, ...], base: np.ndarray, texture: np.ndarray) -> None:
        """Lambert light, ambient and a headlight on the pixels' surfaces (normals in the camera gravity frame)."""
        rows, columns = np.divmod(pixels, self.width)
        dy, dz = self.ray_y[columns], self.ray_z[rows]
        light = self.light
        facing = -(normals[0] + normals[1] * dy + normals[2] * dz) / np.sqrt(1.0 + dy * dy + dz * dz)
        lambert = np.maximum(normals[0] * light[0] + normals[1] * light[1] + normals[2] * light[2], 0.0)
        intensity = _AMBIENT + _DIFFUSE * lambert + _HEADLIGHT * np.maximum(facing, 0.0)
        self.color[pixels] = np.clip(base * (intensity * texture)[:, None], 0.0, 255.0)
        self.incidence[pixels] = np.abs(facing)


def _box_normals(local: tuple[np.ndarray, ...], half: np.ndarray, yaw: float, inward: bool) -> tuple[np.ndarray, ...]:
    """Normals (camera gravity frame) of the box faces the local points lie on; also the face axis and side."""
    ratios = np.stack([np.abs(component) / extent for component, extent in zip(local, half)])
    axis = np.argmax(ratios, axis=0)
    side = np.sign(np.choose(axis, local))
    outward = -side if inward else side
    nx, ny, nz = ((axis == index) * outward for index in range(3))
    c, s = math.cos(yaw), math.sin(yaw)
    return c * nx - s * ny, s * nx + c * ny, nz, axis, side


def _texture_noise(x: np.ndarray, y: np.ndarray, z: np.ndarray, cell: float, amplitude: float, salt: int) -> np.ndarray:
    """A blocky multiplicative texture around 1, fixed to the surface (cells of ``cell`` metres)."""
    cells = np.floor(np.stack((x, y, z), axis=1) / cell).astype(np.int64)
    return 1.0 + amplitude * (2.0 * _hash_noise(cells, salt) - 1.0)


def _shade_primitive(rays: _Rays, primitive: Primitive, pixels: np.ndarray) -> None:
    """Colour the pixels where a primitive is the nearest hit: its colour, textured and lit."""
    if primitive.is_cylinder:
        x, y, z = rays.hit_points(pixels, primitive.center, 0.0)
        radial = np.hypot(x, y)
        on_cap = np.abs(z) / primitive.half[2] > radial / primitive.half[0]
        safe_radial = np.maximum(radial, 1e-12)
        normals = (np.where(on_cap, 0.0, x / safe_radial), np.where(on_cap, 0.0, y / safe_radial),
                   np.where(on_cap, np.sign(z), 0.0))
        c, s = math.cos(primitive.yaw), math.sin(primitive.yaw)
        texture = _texture_noise(c * x + s * y, -s * x + c * y, z, _TEXTURE_CELL_M, _OBJECT_TEXTURE, primitive.salt)
    else:
        local = rays.hit_points(pixels, primitive.center, primitive.yaw)
        normals = _box_normals(local, primitive.half, primitive.yaw, inward=False)[:3]
        texture = _texture_noise(*local, _TEXTURE_CELL_M, _OBJECT_TEXTURE, primitive.salt)
    rays.shade(pixels, normals, primitive.color, texture)
