"""The object layer's geometry: gravity from the floor, box fitting and completion, colours, captions."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from threed_llm_ros.data.catalog import COLORS
from threed_llm_ros.data.programs import DetectedObject
from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.geometry.frames import rotation_to_gravity, yaw_rotation
from threed_llm_ros.geometry.iou import rotated_box_iou
from threed_llm_ros.objects.colors import body_colors, color_name, exposure_gain, object_color
from threed_llm_ros.objects.describe import NOTHING_SEEN, caption, category_in_phrase
from threed_llm_ros.objects.fit import complete_box, fit_box, min_area_rectangle
from threed_llm_ros.objects.gravity import estimate_gravity
from threed_llm_ros.objects.proposals import DEPTH_NOISE_PER_M


def _room(rng: np.random.Generator, floor_z: float = -1.5) -> np.ndarray:
    """Gravity-frame points: a 6 × 6 m floor, a back wall and a 1 × 0.6 × 0.8 m box on the floor."""
    floor = np.column_stack([rng.uniform(0.5, 6, 6000), rng.uniform(-3, 3, 6000), np.full(6000, floor_z)])
    wall = np.column_stack([np.full(3000, 6.0), rng.uniform(-3, 3, 3000), rng.uniform(floor_z, floor_z + 2.5, 3000)])
    box = np.column_stack([rng.uniform(2.5, 3.5, 1500), rng.uniform(-0.3, 0.3, 1500), rng.uniform(floor_z, floor_z + 0.8, 1500)])
    return np.vstack([floor, wall, box]) + rng.normal(0, 0.005, (10500, 3))


@pytest.mark.parametrize("pitch_deg, heading_deg, height", [(0, 0, 1.2), (30, 0, 1.8), (28, 70, 1.8), (10, 200, 0.6)])
def test_gravity_from_the_floor_of_a_pitched_turned_camera(pitch_deg: float, heading_deg: float, height: float) -> None:
    """A camera pitched down and looking along any heading: the floor gives up and its height."""
    rng = np.random.default_rng(0)
    gravity_points = _room(rng, floor_z=-height) @ yaw_rotation(math.radians(heading_deg)).T
    pitch = math.radians(pitch_deg)
    tilt = np.array([[math.cos(pitch), 0, math.sin(pitch)], [0, 1, 0], [-math.sin(pitch), 0, math.cos(pitch)]])
    level_optical = rotation_to_gravity("-y")  # optical → gravity of a level camera
    camera_points = gravity_points @ tilt @ level_optical  # the camera's optical-frame cloud
    frame = estimate_gravity(camera_points, "-y")
    assert frame.floor_found
    recovered = frame.to_gravity(camera_points)
    true_up = (np.array([0.0, 0.0, 1.0]) @ tilt) @ level_optical  # gravity up in the optical frame
    assert math.degrees(math.acos(float(frame.rotation[2] @ true_up))) < 2.0
    assert frame.floor_z == pytest.approx(-height, abs=0.03)
    assert np.percentile(recovered[:, 2], 1) == pytest.approx(-height, abs=0.05)


def test_no_floor_keeps_the_prior() -> None:
    rng = np.random.default_rng(1)
    blob = rng.normal(0, 0.2, (3000, 3)) + np.array([0, 0, 2.0])
    frame = estimate_gravity(blob, "-y")
    assert not frame.floor_found
    np.testing.assert_allclose(frame.rotation, rotation_to_gravity("-y"))


def test_a_known_sensor_height_keeps_a_sofa_seat_from_being_the_floor() -> None:
    """A level camera 1.2 m up facing a sofa at 1.5 m sees its seat, its front and the wall, and
    no floor. Alone, the seat passes for the floor; with the robot's known sensor height it
    cannot, and the floor is put at that height. A floor that is seen still wins."""
    rng = np.random.default_rng(2)
    seat = np.column_stack([rng.uniform(1.5, 2.3, 4000), rng.uniform(-1.2, 1.2, 4000), np.full(4000, -0.75)])
    front = np.column_stack([np.full(150, 1.5), rng.uniform(-1.2, 1.2, 150), rng.uniform(-1.1, -0.75, 150)])  # grazing
    wall = np.column_stack([np.full(3000, 3.0), rng.uniform(-2, 2, 3000), rng.uniform(-0.4, 1.3, 3000)])
    gravity_points = np.vstack([seat, front, wall]) + rng.normal(0, 0.004, (7150, 3))
    optical = gravity_points @ rotation_to_gravity("-y")  # the level camera's optical-frame cloud
    assert estimate_gravity(optical, "-y").floor_z == pytest.approx(-0.75, abs=0.03)  # the seat, taken for the floor
    known = estimate_gravity(optical, "-y", sensor_height=1.2)
    assert known.floor_z == pytest.approx(-1.2) and not known.floor_found
    room = _room(rng, floor_z=-1.25) @ rotation_to_gravity("-y")
    seen = estimate_gravity(room, "-y", sensor_height=1.2)
    assert seen.floor_found and seen.floor_z == pytest.approx(-1.25, abs=0.03)


@pytest.mark.parametrize("yaw", [0.0, 0.4, -1.1, 1.5])
def test_min_area_rectangle_recovers_a_turned_footprint(yaw: float) -> None:
    rng = np.random.default_rng(2)
    local = np.column_stack([rng.uniform(-0.9, 0.9, 800), rng.uniform(-0.4, 0.4, 800)])
    points = local @ yaw_rotation(yaw)[:2, :2].T + np.array([3.0, 1.0])
    centre, size, found_yaw = min_area_rectangle(points)
    np.testing.assert_allclose(centre, [3.0, 1.0], atol=0.03)
    np.testing.assert_allclose(size, [1.8, 0.8], atol=0.05)
    difference = (found_yaw - yaw + math.pi / 2) % math.pi - math.pi / 2
    assert abs(difference) < 0.03


def test_fit_box_stands_on_the_floor_and_matches_the_object() -> None:
    rng = np.random.default_rng(3)
    truth = OrientedBox((3.0, 0.5, -1.0), (1.2, 0.5, 0.4), 0.3)
    local = rng.uniform(-0.5, 0.5, (2000, 3)) * np.asarray(truth.size)
    local[:, 2] = rng.uniform(-0.1, 0.2, 2000)  # the lowest 0.1 m (legs) not seen
    points = local @ yaw_rotation(truth.yaw).T + np.asarray(truth.center)
    box = fit_box(points, floor_z=-1.2)
    assert box.center[2] - box.size[2] / 2 == pytest.approx(-1.2)
    assert rotated_box_iou(box, truth) > 0.8


def test_completion_grows_away_from_the_sensor_unless_a_wall_is_there() -> None:
    front = OrientedBox((3.0, 0.0, -0.5), (1.2, 0.15, 1.0), math.pi / 2)  # a dresser's front, seen from the origin
    grown = complete_box(front, min_depth=0.5, walls=[])
    assert grown.size[1] == pytest.approx(0.5)
    behind = 3.0 + (0.5 - 0.15) / 2  # grew behind the seen face, and a depth-noise sigma (k·range²) further:
    noise = DEPTH_NOISE_PER_M * (behind**2 + 0.5**2)  # the face's nearest points scatter toward the sensor
    assert grown.center[0] == pytest.approx(behind + noise)
    headboard = OrientedBox((5.2, 0.0, -0.5), (0.2, 1.8, 1.0), 0.0)  # thin along x, against a wall at x = 5.4
    wall = (np.array([-1.0, 0.0, 0.0]), 5.4)  # normal toward the sensor, offset: n·p + d = 0 at x = 5.4
    grown = complete_box(headboard, min_depth=1.9, walls=[wall])
    assert grown.size[0] == pytest.approx(1.9)
    assert grown.center[0] + grown.size[0] / 2 <= 5.31  # grew toward the sensor, not through the wall
    free = complete_box(headboard, min_depth=1.9, walls=[])
    assert free.center[0] > headboard.center[0]


def test_a_box_grown_behind_a_far_face_starts_behind_the_faces_noisy_nearest_points() -> None:
    near = complete_box(OrientedBox((1.0, 0.0, 0.0), (1.2, 0.1, 1.0), math.pi / 2), min_depth=0.5, walls=[])
    far = complete_box(OrientedBox((5.0, 0.0, 0.0), (1.2, 0.1, 1.0), math.pi / 2), min_depth=0.5, walls=[])
    shift_near, shift_far = near.center[0] - (1.0 + 0.2), far.center[0] - (5.0 + 0.2)
    assert 0.0 < shift_near < 0.003  # about 1.4 mm at 1.2 m, σ = k·range²
    assert shift_far == pytest.approx(DEPTH_NOISE_PER_M * 5.2**2)  # about 4 cm at 5.2 m
    across = complete_box(OrientedBox((0.0, 5.0, 0.0), (0.1, 1.2, 1.0), 0.0), min_depth=0.5, walls=[])
    assert across.center[:2] == pytest.approx((0.2, 5.0))  # its thin side across the ray: no noise along it to undo


def test_furniture_that_stands_against_walls_is_completed_on_to_the_wall_just_behind_it() -> None:
    front = OrientedBox((3.0, 0.0, -0.5), (1.2, 0.15, 1.0), math.pi / 2)  # a dresser's front, its face at x = 2.925
    wall = (np.array([-1.0, 0.0, 0.0]), 3.6)  # the wall at x = 3.6, 0.675 m behind the front face
    snapped = complete_box(front, min_depth=0.5, walls=[wall], snap_depth=1.6)
    assert snapped.center[0] + snapped.size[1] / 2 == pytest.approx(3.6)  # its back on the wall
    assert snapped.center[0] - snapped.size[1] / 2 == pytest.approx(2.925)  # its front where it was seen
    assert complete_box(front, min_depth=0.5, walls=[wall]) == complete_box(front, min_depth=0.5, walls=[])  # no snap asked
    assert complete_box(front, min_depth=0.5, walls=[wall], snap_depth=0.6).size[1] == pytest.approx(0.5)  # too deep
    far = (np.array([-1.0, 0.0, 0.0]), 4.0)  # 0.4 m beyond the completed back: a free-standing dresser
    assert complete_box(front, min_depth=0.5, walls=[far], snap_depth=1.6).size[1] == pytest.approx(0.5)
    side = (np.array([0.0, -1.0, 0.0]), 1.0)  # a wall the back does not face
    assert complete_box(front, min_depth=0.5, walls=[side], snap_depth=1.6).size[1] == pytest.approx(0.5)


def test_completion_grows_a_short_front_to_the_category_length() -> None:
    toilet = OrientedBox((4.0, 0.0, -0.8), (0.38, 0.36, 0.7), 0.0)  # a toilet seen end-on: too short
    grown = complete_box(toilet, min_depth=0.36, walls=[], min_length=0.65)
    assert max(grown.size[:2]) == pytest.approx(0.65)
    behind = 4.0 + (0.65 - 0.38) / 2  # away from the sensor
    assert grown.center[0] == pytest.approx(behind + DEPTH_NOISE_PER_M * (behind**2 + 0.8**2))
    assert complete_box(toilet, min_depth=0.3, walls=[]) == toilet


def test_catalogue_colours_are_named_as_themselves() -> None:
    for name, rgb in COLORS.items():
        assert color_name(tuple(value / 255 for value in rgb)) == name
    shaded = np.array(COLORS["red"]) / 255 * np.linspace(0.8, 1.0, 50)[:, None]
    assert object_color(shaded) == "red"
    assert object_color(None) == ""


def test_a_chairs_colour_is_its_seat_and_back_not_its_star_base() -> None:
    """A red office chair whose black star base and casters hold most of its points (the base
    faces the sensor, the seat is seen at a grazing angle) is red; a thing seen only low keeps
    every point's colour."""
    rng = np.random.default_rng(0)
    red, black = np.array(COLORS["red"]) / 255, np.array(COLORS["black"]) / 255
    base = np.column_stack([rng.uniform(-0.3, 0.3, 400), rng.uniform(-0.3, 0.3, 400), rng.uniform(0.0, 0.15, 400)])
    seat = np.column_stack([rng.uniform(-0.25, 0.25, 300), rng.uniform(-0.25, 0.25, 300), rng.uniform(0.45, 1.0, 300)])
    points, colors = np.vstack([base, seat]), np.vstack([np.tile(black, (400, 1)), np.tile(red, (300, 1))])
    assert object_color(colors) == "black"
    assert object_color(body_colors(points, colors)) == "red"
    low = np.vstack([base, seat[:20]])  # almost nothing above its lowest quarter: all of it counts
    assert len(body_colors(low, colors[:420])) == 420
    assert body_colors(points, None) is None


def test_an_under_exposed_frame_is_brightened_before_its_colours_are_named() -> None:
    """White-patch exposure: the simulator's dim renders (brightest points at value 0.56–0.77) read
    white as grey and orange as brown; a well-exposed real frame (0.88–1.0) is left as it is."""
    rng = np.random.default_rng(0)
    white, orange = np.array(COLORS["white"]) / 255, np.array(COLORS["orange"]) / 255
    dim = 0.6 * np.vstack([np.tile(white, (300, 1)), np.tile(orange, (300, 1))]) * rng.uniform(0.8, 1.0, (600, 1))
    assert (object_color(dim[:300]), object_color(dim[300:])) == ("grey", "brown")
    gain = exposure_gain(dim)
    assert 1.5 < gain <= 2.0
    assert (object_color(dim[:300], gain), object_color(dim[300:], gain)) == ("white", "orange")
    well_exposed = np.vstack([np.tile(white, (300, 1)), np.tile(np.array(COLORS["grey"]) / 255, (300, 1))])
    assert exposure_gain(well_exposed) == pytest.approx(255 / 236)
    assert object_color(well_exposed[300:], exposure_gain(well_exposed)) == "grey"
    assert exposure_gain(np.zeros((10, 3))) == 2.0 and exposure_gain(None) == 1.0


def _object(category: str, color: str = "", size: float = 1.0) -> DetectedObject:
    return DetectedObject(category, color, OrientedBox((2.0, 0.0, 0.0), (size, size, size), 0.0), 0.9)


def test_caption_names_only_the_objects_given() -> None:
    text = caption([_object("bed", "white", 2.0), _object("night stand", "brown", 0.5), _object("night stand", "brown", 0.5)])
    assert text == "I see a white bed and two brown night stands."
    assert caption([]) == NOTHING_SEEN
    assert "chair" not in caption([_object("lamp")])


@pytest.mark.parametrize("phrase, category", [("the brown nightstand", "night stand"), ("Where is the red chair?", "chair"),
                                               ("any books?", "book"), ("the thing", None), ("trash can by the desk", "trash can"),
                                               ("the chair next to the green nightstand", "chair"),
                                               ("the bedside table left of the chair", "night stand")])
def test_category_in_phrase(phrase: str, category: str | None) -> None:
    assert category_in_phrase(phrase) == category


def test_named_categories_are_whole_words() -> None:
    from threed_llm_ros.objects.describe import named_categories

    assert named_categories("I see a black bookshelf and two night stands.") == {"bookshelf", "night stand"}
    assert named_categories("I see no object I know in this frame.") == set()
    assert named_categories("Two bedside tables and a trash can.") == {"night stand", "trash can"}


def test_a_floor_mostly_hidden_by_furniture_is_still_the_floor() -> None:
    """A level camera 1.2 m up sees a bed's top and a wall, and only a narrow strip of floor
    (about 1 % of the points): the strip gives the floor's height; being narrow, not its tilt."""
    rng = np.random.default_rng(5)
    bed = np.column_stack([rng.uniform(2.0, 4.0, 6000), rng.uniform(-2, 2, 6000), np.full(6000, -0.65)])
    wall = np.column_stack([np.full(5000, 4.5), rng.uniform(-2, 2, 5000), rng.uniform(-1.2, 1.3, 5000)])
    strip = np.column_stack([rng.uniform(4.05, 4.45, 150), rng.uniform(-2, 2, 150), np.full(150, -1.2)])
    gravity_points = np.vstack([bed, wall, strip]) + rng.normal(0, 0.004, (11150, 3))
    frame = estimate_gravity(gravity_points @ rotation_to_gravity("-y"), "-y")
    assert frame.floor_found and frame.floor_z == pytest.approx(-1.2, abs=0.03)
    np.testing.assert_allclose(frame.rotation, rotation_to_gravity("-y"), atol=1e-6)


def test_a_far_walls_noisy_points_all_go_with_the_wall() -> None:
    """A wall 5 m away, seen through depth noise that grows with range (sigma = k·r², several
    cm there): none of its points is left to glue the furniture in front of it into one cluster."""
    from threed_llm_ros.objects.proposals import structure_mask

    rng = np.random.default_rng(6)
    wall = np.column_stack([np.full(20000, 5.0), rng.uniform(-2.5, 2.5, 20000), rng.uniform(-1.2, 1.3, 20000)])
    wall[:, 0] += rng.normal(0, 1, 20000) * 0.0015 * np.linalg.norm(wall, axis=1) ** 2
    floor = np.column_stack([rng.uniform(0.5, 5, 8000), rng.uniform(-2.5, 2.5, 8000), np.full(8000, -1.2)])
    cabinet = np.column_stack([rng.uniform(4.4, 4.9, 3000), rng.uniform(-0.4, 0.4, 3000), rng.uniform(-1.2, -0.4, 3000)])
    points = np.vstack([wall, floor, cabinet])
    structure, walls = structure_mask(points, -1.2)
    assert len(walls) == 1
    assert structure[:20000].mean() > 0.995
    assert structure[-3000:].mean() < 0.5  # the cabinet's front stays (its back, against the wall, may go)


def test_a_strip_of_wall_taller_than_any_furniture_is_wall() -> None:
    """A room's corner: past a bookshelf's side only 0.6 m of the side wall shows, floor to ceiling
    (2.5 m). Too narrow for a wall by width, it is taller than any category gets, so it goes with
    the walls rather than join the bookshelf (the card's scene sim0_000026: a 2.4 m "cabinet").
    The bookshelf's own 1.85 m front, as narrow, stays."""
    from threed_llm_ros.objects.proposals import structure_mask

    rng = np.random.default_rng(8)
    back = np.column_stack([np.full(15000, 3.5), rng.uniform(-1.5, 1.5, 15000), rng.uniform(-1.2, 1.3, 15000)])
    strip = np.column_stack([rng.uniform(2.9, 3.5, 3000), np.full(3000, -1.5), rng.uniform(-1.2, 1.3, 3000)])
    shelf = np.column_stack([np.full(3000, 3.1), rng.uniform(-1.45, -0.85, 3000), rng.uniform(-1.2, 0.65, 3000)])
    floor = np.column_stack([rng.uniform(0.5, 3.5, 6000), rng.uniform(-1.5, 1.5, 6000), np.full(6000, -1.2)])
    points = np.vstack([back, strip, shelf, floor]) + rng.normal(0, 0.003, (27000, 3))
    structure, walls = structure_mask(points, -1.2)
    assert len(walls) == 2
    assert structure[15000:18000].mean() > 0.85  # bar the slice on the bookshelf front's plane (measured 0.91)
    assert structure[18000:21000].mean() < 0.1


def test_a_box_on_a_cabinet_is_its_own_proposal_but_a_chairs_back_is_not() -> None:
    """The top of a cabinet, mostly hidden by the box on it, still holds the box; a seat 0.42 m
    up is not a support, so a chair's back stays with its seat."""
    from threed_llm_ros.objects.proposals import split_supported

    rng = np.random.default_rng(7)
    body = np.column_stack([np.full(800, 3.0), rng.uniform(-0.4, 0.4, 800), rng.uniform(0.0, 0.8, 800)])
    top = np.column_stack([rng.uniform(3.0, 3.5, 130), rng.uniform(-0.4, 0.4, 130), np.full(130, 0.8)])
    box = np.column_stack([np.full(300, 3.1), rng.uniform(-0.2, 0.2, 300), rng.uniform(0.82, 1.1, 300)])
    cabinet = np.vstack([body, top, box])
    pieces, surface = split_supported(cabinet, np.arange(len(cabinet)), 0.0)
    assert surface == pytest.approx(0.8, abs=0.03)
    assert len(pieces) == 2 and set(pieces[1]) <= set(range(930, 1230)) and len(pieces[1]) >= 270  # the box (its lowest cm stay)
    seat = np.column_stack([rng.uniform(2.0, 2.45, 250), rng.uniform(-0.22, 0.22, 250), np.full(250, 0.42)])
    legs = np.column_stack([np.full(100, 2.0), rng.uniform(-0.22, 0.22, 100), rng.uniform(0.0, 0.42, 100)])
    back = np.column_stack([np.full(300, 2.43), rng.uniform(-0.22, 0.22, 300), rng.uniform(0.45, 0.9, 300)])
    chair = np.vstack([seat, legs, back])
    assert len(split_supported(chair, np.arange(len(chair)), 0.0)[0]) == 1


def _table_with(rng: np.random.Generator, thing: np.ndarray, thing_colour: tuple[float, float, float],
                extra: np.ndarray | None = None, extra_colour: tuple[float, float, float] = (0.0, 0.0, 0.0)
                ) -> tuple[np.ndarray, np.ndarray]:
    """A 1 × 0.8 m table top 0.745 m up (light brown, its front face slightly shaded) with ``thing``
    (and ``extra``) lying on it in their colours: (points, colours 0-1)."""
    top = np.column_stack([rng.uniform(2.0, 3.0, 900), rng.uniform(-0.4, 0.4, 900), rng.normal(0.745, 0.002, 900)])
    front = np.column_stack([np.full(300, 2.0), rng.uniform(-0.4, 0.4, 300), rng.uniform(0.0, 0.745, 300)])
    # the thing hides the top under it
    top = top[~((np.abs(top[:, 0] - thing[:, 0].mean()) < 0.12) & (np.abs(top[:, 1] - thing[:, 1].mean()) < 0.1))]
    parts = [top, front, thing] + ([extra] if extra is not None else [])
    colours = [np.tile((0.8, 0.6, 0.4), (len(top), 1)), np.tile((0.6, 0.45, 0.3), (len(front), 1)),
               np.tile(thing_colour, (len(thing), 1))] + ([np.tile(extra_colour, (len(extra), 1))] if extra is not None else [])
    return np.vstack(parts), np.vstack(colours)


def test_a_book_lying_flat_on_a_table_is_its_own_proposal() -> None:
    """A 1.5 cm book barely rises above the top it lies on: its colour tells it from the top. The
    same patch in the table's own colour, printed flat on it, or as the foot of a monitor of its
    colour standing on it, is no thing of its own."""
    from threed_llm_ros.objects.proposals import split_supported

    rng = np.random.default_rng(9)

    def book(rise: float) -> np.ndarray:
        return np.column_stack([rng.uniform(2.4, 2.62, 80), rng.uniform(-0.1, 0.08, 80), rng.normal(0.745 + rise, 0.002, 80)])

    points, colours = _table_with(rng, book(0.015), (0.2, 0.3, 0.8))
    pieces, surface = split_supported(points, np.arange(len(points)), 0.0, rgb=colours)
    assert surface == pytest.approx(0.745, abs=0.02)
    assert len(pieces) == 2 and set(pieces[1]) == set(range(len(points) - 80, len(points)))
    assert len(split_supported(points, np.arange(len(points)), 0.0)[0]) == 1  # without colours: not seen
    for rise, colour in ((0.015, (0.78, 0.58, 0.39)), (0.0, (0.2, 0.3, 0.8))):  # the table's colour; a print
        points, colours = _table_with(rng, book(rise), colour)
        assert len(split_supported(points, np.arange(len(points)), 0.0, rgb=colours)[0]) == 1
    screen = np.column_stack([np.full(200, 2.5), rng.uniform(-0.25, 0.25, 200), rng.uniform(0.83, 1.13, 200)])
    points, colours = _table_with(rng, book(0.015), (0.1, 0.1, 0.1), screen, (0.1, 0.1, 0.1))
    pieces, _ = split_supported(points, np.arange(len(points)), 0.0, rgb=colours)
    assert all(len(piece) != 80 for piece in pieces)  # the foot is no book; the screen alone stands on the top


def test_a_dresser_against_a_beds_side_is_split_off_by_its_higher_top() -> None:
    """One DBSCAN cluster: a bed (top 0.55 m) and a dresser touching its side (top 0.85 m).
    Their tops step by 0.3 m, so they come apart; a long flat table stays whole."""
    from threed_llm_ros.objects.proposals import split_by_height

    rng = np.random.default_rng(8)
    bed = np.column_stack([rng.uniform(2.0, 4.0, 4000), rng.uniform(-0.8, 0.8, 4000), rng.uniform(0.0, 0.55, 4000)])
    bed[:2500, 2] = 0.55  # the mattress top
    dresser = np.column_stack([rng.uniform(2.0, 2.5, 1500), rng.uniform(0.8, 1.8, 1500), rng.uniform(0.0, 0.85, 1500)])
    dresser[:800, 2] = 0.85
    points = np.vstack([bed, dresser])
    pieces = split_by_height(points, np.arange(len(points)))
    assert len(pieces) == 2
    sizes = sorted(len(piece) for piece in pieces)
    assert abs(sizes[0] - 1500) < 150 and abs(sizes[1] - 4000) < 150
    table = np.column_stack([rng.uniform(2.0, 3.5, 3000), rng.uniform(-0.4, 0.4, 3000), np.full(3000, 0.75)])
    assert len(split_by_height(table, np.arange(len(table)))) == 1


def test_a_sliver_of_points_is_no_sighting() -> None:
    """24 points 6.6 m away (the real NYU basement's far room) cover 4 % of the smallest face a
    table has: no longer a 0.79 table. The same table seen whole, a cup of 10 points, a coarse
    camera whose every point covers more, and a cloud of unknown density keep their scores."""
    from threed_llm_ros.geometry.camera import CameraIntrinsics
    from threed_llm_ros.objects.layer import SceneObject, camera_resolution
    from threed_llm_ros.objects.plausibility import doubt_thin_evidence

    def thing(category: str, center: tuple, size: tuple, points: int, score: float) -> SceneObject:
        return SceneObject(category=category, color="red", box=OrientedBox(center, size, 0.0), score=score,
                           points=np.zeros((points, 3)), categories=((category, score), ("chair", 0.1)))

    kinect = (582.6, 582.7)
    sliver = thing("table", (5.8, -3.1, -1.2), (0.7, 0.8, 0.52), 24, 0.786)
    doubted = doubt_thin_evidence([sliver], kinect)[0]
    assert doubted.score < 0.5 and doubted.categories[0][1] == pytest.approx(doubted.score, abs=1e-4)
    seen = thing("table", (3.0, 0.0, -0.8), (1.2, 0.8, 0.75), 400, 0.786)
    cup = thing("cup", (2.0, 0.0, -0.4), (0.08, 0.08, 0.1), 10, 0.9)
    assert [obj.score for obj in doubt_thin_evidence([seen, cup], kinect)] == [0.786, 0.9]
    assert doubt_thin_evidence([sliver], (100.0, 100.0))[0].score == 0.786  # 6 cm pixels at 6.6 m
    assert doubt_thin_evidence([sliver], None)[0].score == 0.786
    intrinsics = CameraIntrinsics.from_field_of_view(640, 480, 60.0)
    lidar_beside_camera = np.eye(4)
    lidar_beside_camera[:3, 3] = (0.1, -0.2, 0.0)
    assert camera_resolution(intrinsics, None) == (intrinsics.fx, intrinsics.fy)
    assert camera_resolution(intrinsics, lidar_beside_camera) is None and camera_resolution(None, None) is None


def test_a_small_thing_on_a_bed_or_sofa_is_only_possible() -> None:
    """A book-sized thing on a confident bed (a pillow, a fold of the blanket: no category names
    those), or on any long low surface whatever it is called (an ottoman's tufts), keeps only
    part of its score; the same thing on a table, on a night stand, or high on a bed too unsure
    to count, keeps all of it."""
    from threed_llm_ros.objects.layer import SceneObject
    from threed_llm_ros.objects.plausibility import ON_SOFT_FURNITURE_FACTOR, doubt_things_on_soft_furniture

    def thing(category: str, center: tuple, size: tuple, score: float) -> SceneObject:
        return SceneObject(category=category, color="white", box=OrientedBox(center, size, 0.0), score=score,
                           points=np.zeros((0, 3)), categories=((category, score),))

    doubted_score = pytest.approx(0.8 * ON_SOFT_FURNITURE_FACTOR)
    high_bed = thing("bed", (3.2, 0.0, 0.6), (2.0, 1.6, 1.2), 0.9)  # a showroom bed, mattress top at 0.8 m
    book_on_bed = thing("book", (3.0, 0.2, 0.83), (0.25, 0.18, 0.05), 0.8)
    table = thing("table", (6.0, 0.0, 0.37), (1.2, 0.8, 0.75), 0.9)
    book_on_table = thing("book", (6.0, 0.1, 0.77), (0.25, 0.18, 0.05), 0.8)
    doubted = doubt_things_on_soft_furniture([high_bed, book_on_bed, table, book_on_table], 0.5, floor_z=0.0)
    assert doubted[1].score == doubted_score
    assert doubted[1].categories[0][1] == pytest.approx(0.8 * ON_SOFT_FURNITURE_FACTOR, abs=1e-4)
    assert [obj.score for obj in doubted[::2]] == [0.9, 0.9] and doubted[3].score == 0.8
    unsure_bed = replace(high_bed, score=0.4)
    assert doubt_things_on_soft_furniture([unsure_bed, book_on_bed], 0.5, floor_z=0.0)[1].score == 0.8
    ottoman = thing("dresser", (1.0, 2.0, 0.25), (1.2, 0.5, 0.5), 0.62)  # named a dresser: no category fits
    tuft = replace(thing("book", (1.1, 2.0, 0.52), (0.2, 0.15, 0.04), 0.8), on_top=True)
    assert doubt_things_on_soft_furniture([ottoman, tuft], 0.5, floor_z=0.0)[1].score == doubted_score
    night_stand = thing("night stand", (1.0, 2.0, 0.25), (0.45, 0.4, 0.5), 0.9)
    assert doubt_things_on_soft_furniture([night_stand, tuft], 0.5, floor_z=0.0)[1].score == 0.8
    hanging_over = replace(tuft, on_top=False)  # not found on that surface: its box only reaches low
    assert doubt_things_on_soft_furniture([ottoman, hanging_over], 0.5, floor_z=0.0)[1].score == 0.8



def test_a_slender_piece_under_a_wider_one_holds_it_up() -> None:
    """A lamp's stem under its shade (the sensor saw the two apart, the stem behind the shade's
    visible front) holds it up; a cup beside the lamp's foot, a stem off to the side, and a stem
    reaching well into the shade from above do not."""
    from threed_llm_ros.objects.pieces import holds_up

    shade = OrientedBox((2.40, 0.70, -0.05), (0.38, 0.17, 0.29), -1.32)  # the visible front half
    stem = OrientedBox((2.54, 0.73, -0.33), (0.16, 0.03, 0.26), 0.42)
    assert holds_up(stem, shade)
    assert not holds_up(shade, stem)
    cup = OrientedBox((2.45, 0.70, -0.42), (0.09, 0.07, 0.04), 0.0)  # short and wide for its height
    assert not holds_up(cup, OrientedBox((2.45, 0.72, -0.19), (0.30, 0.19, 0.46), 0.0))
    aside = OrientedBox((2.40, 1.20, -0.33), (0.05, 0.03, 0.26), 0.0)
    assert not holds_up(aside, shade)
    too_low = OrientedBox((2.45, 0.70, -0.60), (0.05, 0.03, 0.20), 0.0)  # its top 0.2 m under the shade
    assert not holds_up(too_low, shade)
    leg = OrientedBox((3.15, 0.61, -0.94), (0.13, 0.07, 0.52), 0.0)  # a table's leg under its top
    assert holds_up(leg, OrientedBox((2.62, 0.86, -0.63), (1.13, 0.93, 0.38), 0.0))


def test_a_seat_over_a_low_base_on_the_floor_stands_on_it() -> None:
    """The real TUM frame's yellow office chair: its seat and back (0.44-0.90 m up) over its
    five-star base (0.05-0.13 m), the gas spring between them unseen. The seat stands on the base;
    a box on the floor beside the chair, a box under a table's wide top, a base reaching 0.3 m up
    and a seat resting right on the base do not count."""
    from threed_llm_ros.objects.pieces import stands_on_base

    floor_z = -1.75
    seat = OrientedBox((1.84, -0.58, -1.06), (0.43, 0.39, 0.43), 0.3)
    base = OrientedBox((1.87, -0.61, -1.66), (0.54, 0.33, 0.08), 0.1)
    assert stands_on_base(base, seat, floor_z)
    assert not stands_on_base(seat, base, floor_z)
    beside = OrientedBox((1.84, -1.10, -1.62), (0.30, 0.30, 0.16), 0.0)
    assert not stands_on_base(beside, seat, floor_z)
    table_top = OrientedBox((2.00, -0.50, -1.05), (1.60, 0.80, 0.06), 0.0)
    under_the_table = OrientedBox((2.50, -0.55, -1.60), (0.30, 0.30, 0.20), 0.0)
    assert not stands_on_base(under_the_table, table_top, floor_z)
    tall = OrientedBox((1.87, -0.61, -1.60), (0.54, 0.33, 0.30), 0.1)  # its top 0.3 m up
    assert not stands_on_base(tall, seat, floor_z)
    resting = OrientedBox((1.84, -0.58, -1.45), (0.43, 0.39, 0.30), 0.3)  # its bottom 0.08 m over the base
    assert not stands_on_base(base, resting, floor_z)


def _room_with_a_low_clump(panel: bool) -> tuple[np.ndarray, np.ndarray]:
    """A gravity-frame cloud (sensor at the origin, floor 1.2 m below): floor, a back wall 5 m
    ahead and a 0.5 m wide, 0.12 m tall clump on the floor 2.5 m ahead; with ``panel``, a
    board 2 m ahead hides the space over the clump (a desk's modesty panel)."""
    rng = np.random.default_rng(0)
    floor = np.column_stack([rng.uniform(0.5, 5, 6000), rng.uniform(-2, 2, 6000), np.full(6000, -1.2)])
    wall = np.column_stack([np.full(6000, 5.0), rng.uniform(-2, 2, 6000), rng.uniform(-1.2, 1.0, 6000)])
    clump = np.column_stack([rng.uniform(2.25, 2.75, 800), rng.uniform(-0.25, 0.25, 800), rng.uniform(-1.2, -1.08, 800)])
    parts = [floor, wall, clump]
    if panel:
        parts.append(np.column_stack([np.full(3000, 2.0), rng.uniform(-0.6, 0.6, 3000), rng.uniform(-1.0, -0.2, 3000)]))
    return np.vstack(parts), clump


@pytest.mark.parametrize("panel", [False, True])
def test_a_low_clump_under_seen_open_space_is_no_floor_furniture(panel: bool) -> None:
    """A 0.12 m tall thing on the floor is no chair (least height 0.8 m) where the sensor saw the
    space over it empty, up to the chair's height; where that space is hidden, the rest of a chair
    may stand there, and nothing is ruled out."""
    from threed_llm_ros.objects.layer import ObjectLayer, PerceptionSettings
    from threed_llm_ros.objects.pieces import Proposal
    from threed_llm_ros.objects.recognition import OTHER
    from threed_llm_ros.objects.visibility import RayGrid, open_above
    from threed_llm_ros.resources import default_object_classifier

    cloud, clump = _room_with_a_low_clump(panel)
    rays, box = RayGrid(cloud), fit_box(clump, -1.2)
    assert open_above(rays, box, -1.2 + 0.72) is not panel
    layer = ObjectLayer.load(default_object_classifier(), PerceptionSettings())
    ruled_out = {name: bool(flag) for name, flag in
                 zip(layer.classes, layer._seen_too_low(Proposal(clump, None, box, 3.0, 0.0), -1.2, rays))}
    assert ruled_out["chair"] == ruled_out["bed"] == (not panel)
    assert not ruled_out[OTHER] and not ruled_out["cup"]  # top categories and `other` are never ruled out here


def test_two_flat_books_side_by_side_in_unlike_colours_are_two_things() -> None:
    """A white and a pink book lying side by side on a table touch: one 0.4 m flat piece, longer
    than any book. Their unlike colours, each one piece in space, make them two things (in the
    card's scene sim0_000027 they were one 0.53 m "box 0.27"). One book with a striped cover, a
    long tray of one colour and two books of one colour stay one piece."""
    from threed_llm_ros.objects.proposals import split_by_colour, split_supported

    rng = np.random.default_rng(11)

    def book(x: tuple[float, float], y: tuple[float, float], thickness: float, count: int) -> np.ndarray:
        return np.column_stack([rng.uniform(*x, count), rng.uniform(*y, count), rng.normal(0.745 + thickness, 0.002, count)])

    white, pink = (0.9, 0.9, 0.88), (0.85, 0.45, 0.6)
    first, second = book((2.3, 2.53), (-0.2, 0.03), 0.04, 90), book((2.4, 2.65), (0.04, 0.24), 0.03, 70)
    points, colours = _table_with(rng, first, white, second, pink)
    pieces, surface = split_supported(points, np.arange(len(points)), 0.0, rgb=colours)
    books = sorted(len(piece) for piece in pieces[1:])
    assert surface == pytest.approx(0.745, abs=0.02) and books == [70, 90], books
    points, colours = _table_with(rng, first, white, second, white)
    pieces, _ = split_supported(points, np.arange(len(points)), 0.0, rgb=colours)
    assert sorted(len(piece) for piece in pieces[1:]) == [160]
    # on a 3 cm grid: stripes of 3-12 cm, one colour with a few stray points, two halves
    xs, ys = np.meshgrid(np.arange(0, 0.45, 0.03), np.arange(0, 0.24, 0.03))
    grid = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)])
    for width in (0.03, 0.06, 0.12):
        striped = np.where(((grid[:, 0] // width) % 2 == 0)[:, None], (0.8, 0.1, 0.1), (0.9, 0.8, 0.1))
        assert len(split_by_colour(grid, striped)) == 1, width
    stray = np.tile((0.4, 0.4, 0.45), (len(grid), 1))
    stray[:3] = (0.9, 0.8, 0.1)
    assert len(split_by_colour(grid, stray)) == 1
    halves = np.where((grid[:, 0] < 0.22)[:, None], white, pink)
    assert sorted(len(part) for part in split_by_colour(grid, halves)) == [64, 64]
