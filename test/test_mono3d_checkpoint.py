"""The shipped single-image grounder (models/mono3d) stays above its model card's floors on the CI subset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from threed_llm_ros.mono3d.card import CI_FRAMES, ci_subset_metrics, failed_floors, floors_from
from threed_llm_ros.mono3d.model import load_model

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "mono3d"


def test_the_shipped_checkpoint_holds_its_card_floors(realdata: Path) -> None:
    """The first test frames and the SUN RGB-D bed: Acc@0.25, mean IoU, absent "not seen" rate, present
    miss rate and the bed IoU within the card's floors; the checkpoint carries no backbone weights."""
    card = json.loads((SHIPPED / "model_card.json").read_text())
    assert card["ci_subset"]["frames"] == CI_FRAMES
    model = load_model(SHIPPED)
    assert 0.0 < model.config.presence_threshold < 1.0
    assert not any(name.startswith(("backbone", "efficientnet")) for name in model.state_dict())
    measured = ci_subset_metrics(model, realdata)
    assert failed_floors(measured, card["ci_floors"]) == [], measured
    assert set(card["ci_floors"]) >= {"min_acc_0.25", "min_absent_not_seen_rate", "max_present_miss_rate",
                                      "min_sun_rgbd_bed_iou"}


def test_floors_catch_a_drop() -> None:
    """The floor check fails a figure under its floor or over its ceiling (so the CI test can fail)."""
    measured = {"acc_0.25": 0.4, "mean_iou": 0.3, "absent_not_seen_rate": 0.9, "present_miss_rate": 0.1,
                "sun_rgbd_bed_iou": 0.3}
    floors = floors_from(measured)
    assert failed_floors(measured, floors) == []
    worse = {**measured, "acc_0.25": 0.3, "present_miss_rate": 0.2}
    assert [line.split(" ")[0] for line in failed_floors(worse, floors)] == ["acc_0.25", "present_miss_rate"]
    with pytest.raises(KeyError):
        floors_from({"acc_0.25": 0.4})
