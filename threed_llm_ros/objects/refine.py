"""Which object it is, once it is an object: the view's silhouette and recess settle look-alikes.

The shape classifier (``recognition.py``) decides well whether a proposal is one of the
catalogue's objects or junk (``other``): that robustness on real rooms came from the junk it
learned, and retraining it loses it. Among objects, some look alike from above: a cabinet, a
dresser and a desk of one size fill the same top-down grid, and a box on a table is sized like a
lamp's shade. What tells them apart is what the sensor faces:

* the **silhouette**: the points' spread over a 3 × 3 grid across the view (left / centre /
  right × low / middle / high). A desk leaves its knee space empty (low centre), a lamp its
  lower sides, a cabinet, a dresser and a box fill all of it.
* the **recess**: how far behind the nearest face the centre's points lie. A bookshelf's open
  shelves and a desk's knee panel are recessed, a cabinet's doors are not.

:class:`Refiner` is a small ensemble (``recognition.ShapeClassifier``) over the shape features
plus these (``REFINER_FEATURE_NAMES``), over the object categories only (no ``other``), trained
on the simulator's object proposals (``threed-llm train-objects --only refiner``). :func:`refine`
shares a proposal's probability within its ``LOOK_ALIKES`` group between both opinions (their
mean). ``P(other)``, the group's mass and every category outside it (a bed, a chair) stay the
shape classifier's, so junk stays junk: let loose on every category, the refiner found a little
more on simulated frames but named a bed in a real basement. It names the final objects only:
joins and cuts are judged on shape alone (asked about a table's top without its legs, the view
says "box", and the top would no longer join its legs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from threed_llm_ros.geometry.boxes import OrientedBox
from threed_llm_ros.objects.recognition import FEATURE_NAMES, ShapeClassifier, load_classifier

SILHOUETTE_GRID = 3
VIEW_FEATURE_NAMES: tuple[str, ...] = (
    *(f"silhouette_{row}_{column}" for row in ("low", "middle", "high") for column in ("left", "centre", "right")),
    "centre_recess", "depth_spread",
)
REFINER_FEATURE_NAMES: tuple[str, ...] = (*FEATURE_NAMES, *VIEW_FEATURE_NAMES)
REFINER_DIRECTORY = "refiner"  # inside the object classifier's directory
MAX_RECESS_M = 1.0
# What a depth view confuses: case goods and tables of one size, and small things on a top.
# Only within these does the refiner speak; a bed, a sofa, a chair keep the shape classifier's name.
LOOK_ALIKES: tuple[tuple[str, ...], ...] = (
    ("table", "desk", "night stand", "dresser", "cabinet", "bookshelf"),
    ("box", "lamp", "monitor", "book"),
)


def view_features(points: np.ndarray, box: OrientedBox) -> np.ndarray:
    """The :data:`VIEW_FEATURE_NAMES` of one proposal: gravity-frame points, sensor at the origin.

    Silhouette cells hold each cell's share of the points relative to an even spread (clipped at
    1), so they do not depend on the sensor's density; the recess (m) is the centre cell's median
    range behind the nearest points (5th percentile), and the depth spread the 10–90 % range."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    features = np.zeros(len(VIEW_FEATURE_NAMES), dtype=np.float32)
    if len(points) < 3:
        return features
    centre = np.asarray(box.center[:2], dtype=np.float64)
    distance = float(np.linalg.norm(centre))
    toward = centre / distance if distance > 1e-6 else np.array([1.0, 0.0])
    across = np.array([-toward[1], toward[0]])
    lateral, depth = points[:, :2] @ across, points[:, :2] @ toward
    left, right = np.percentile(lateral, [2.0, 98.0])
    bottom = box.center[2] - box.size[2] / 2
    columns = np.floor((lateral - left) / max(right - left, 1e-3) * SILHOUETTE_GRID).clip(0, SILHOUETTE_GRID - 1)
    rows = np.floor((points[:, 2] - bottom) / max(box.size[2], 1e-3) * SILHOUETTE_GRID).clip(0, SILHOUETTE_GRID - 1)
    cells = (rows * SILHOUETTE_GRID + columns).astype(np.int64)
    counts = np.bincount(cells, minlength=SILHOUETTE_GRID**2)
    features[: SILHOUETTE_GRID**2] = np.minimum(1.0, counts / (len(points) / SILHOUETTE_GRID**2))
    front = float(np.percentile(depth, 5.0))
    middle = cells == (SILHOUETTE_GRID**2) // 2
    features[-2] = min(float(np.median(depth[middle])) - front, MAX_RECESS_M) if middle.any() else 0.0
    spread = np.percentile(depth, [10.0, 90.0])
    features[-1] = min(float(spread[1] - spread[0]), MAX_RECESS_M)
    return features


class Refiner:
    """The trained look-alike model; :meth:`probabilities` over the object categories."""

    def __init__(self, model: ShapeClassifier) -> None:
        self.model = model
        self.classes = list(model.config.classes)

    def probabilities(self, shape_rows: np.ndarray, view_rows: np.ndarray) -> np.ndarray:
        """(N, object categories) probabilities of proposals' shape and view feature rows."""
        return self.model.probabilities(np.concatenate([shape_rows, view_rows], axis=1))


def load_refiner(classifier_directory: str | Path) -> Refiner | None:
    """The refiner saved beside an object classifier, or None where it has none (an older
    checkpoint keeps working as it did)."""
    directory = Path(classifier_directory) / REFINER_DIRECTORY
    if not (directory / "config.json").is_file():
        return None
    return Refiner(load_classifier(directory, REFINER_FEATURE_NAMES))


def refine(probabilities: np.ndarray, classes: list[str], refined: np.ndarray, refined_classes: list[str]) -> np.ndarray:
    """``probabilities`` (N, classes, with ``other``) where each row's likeliest object category is
    in a ``LOOK_ALIKES`` group: that group's probability mass redistributed by the mean of the row's
    own distribution over the group and ``refined``'s (N, refined_classes), an ensemble of the two
    opinions on which look-alike it is. Everything else (``other``, a bed, a chair) stays."""
    result = probabilities.copy()
    objects = [classes.index(name) for name in refined_classes]
    for row, (shape, view) in enumerate(zip(probabilities, refined)):
        top = classes[objects[int(np.argmax(shape[objects]))]]
        group = next((names for names in LOOK_ALIKES if top in names), None)
        if group is None:
            continue
        names = [name for name in group if name in classes and name in refined_classes]
        columns = [classes.index(name) for name in names]
        mass = float(shape[columns].sum())
        opinion = view[[refined_classes.index(name) for name in names]]
        if mass <= 1e-12 or opinion.sum() <= 1e-12:
            continue
        result[row, columns] = mass * (shape[columns] / mass + opinion / opinion.sum()) / 2.0
    return result
