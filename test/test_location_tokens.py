"""Location tokens: quantisation round trip, malformed input, and the codec's settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.model.location_tokens import LocationCodec, LocationTokenSettings

CODEC = LocationCodec(LocationTokenSettings(num_bins=128))
CENTER = st.floats(-1.2, 1.2, allow_nan=False)
SIZE = st.floats(0.005, 2.5, allow_nan=False)
YAW = st.floats(-math.pi, math.pi, allow_nan=False, exclude_max=True)
BOXES = st.tuples(CENTER, CENTER, CENTER, SIZE, SIZE, SIZE, YAW).map(np.array)


@given(box=BOXES, num_bins=st.sampled_from([16, 128, 256]))
@settings(max_examples=200, deadline=None)
def test_round_trip_is_within_half_a_bin(box: np.ndarray, num_bins: int) -> None:
    codec = LocationCodec(LocationTokenSettings(num_bins=num_bins))
    text = codec.encode(box)
    assert text.count("<loc_") == 7
    decoded = codec.decode(text)
    assert decoded is not None
    errors = codec.error_in_bins(box, decoded)
    assert np.all(errors <= 0.5 + 1e-9), (box, decoded, errors)


def test_bin_widths_match_the_ranges() -> None:
    center, size, yaw = CODEC.quantizers[0], CODEC.quantizers[3], CODEC.quantizers[6]
    assert center.bin_width == pytest.approx(2.4 / 128)
    assert size.bin_width == pytest.approx(math.log(2.5 / 0.005) / 128)
    assert yaw.bin_width == pytest.approx(2 * math.pi / 128)
    # a 0.5-unit centre error is far more than half a bin: the error measure is not vacuous
    assert CODEC.error_in_bins(np.zeros(7) + 0.5, np.array([0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]))[0] > 10


def test_yaw_wraps_and_out_of_range_values_clamp() -> None:
    near_plus_pi = CODEC.encode_bins([0, 0, 0, 1, 1, 1, math.pi - 1e-6])
    near_minus_pi = CODEC.encode_bins([0, 0, 0, 1, 1, 1, -math.pi])
    assert near_plus_pi[6] == 127 and near_minus_pi[6] == 0
    assert CODEC.encode_bins([0, 0, 0, 1, 1, 1, math.pi])[6] == 0  # +pi is -pi
    clamped = CODEC.encode_bins([5.0, -5.0, 0, 10.0, 1e-6, 1, 0])
    assert clamped[0] == 127 and clamped[1] == 0 and clamped[3] == 127 and clamped[4] == 0


def test_find_boxes_in_running_text() -> None:
    first = np.array([0.1, -0.2, 0.3, 0.4, 0.5, 0.6, 1.0])
    second = np.array([-0.5, 0.5, 0.0, 0.1, 0.2, 0.05, -2.0])
    text = f"The chair is at {CODEC.encode(first)} and the cup at {CODEC.encode(second)}."
    boxes = CODEC.find_boxes(text)
    assert len(boxes) == 2
    assert np.all(CODEC.error_in_bins(first, boxes[0]) <= 0.5 + 1e-9)
    assert np.all(CODEC.error_in_bins(second, boxes[1]) <= 0.5 + 1e-9)
    # two boxes written back to back are one run of 14 tokens: still two boxes
    assert len(CODEC.find_boxes(CODEC.encode(first) + CODEC.encode(second))) == 2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no box here",
        "<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6>",  # six tokens
        "<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>",  # eight
        "<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_128>",  # index out of range
        "<loc_1><loc_2><loc_3> x <loc_4><loc_5><loc_6><loc_7>",  # interrupted
        "<loc_-1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7>",
        "<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7",
    ],
)
def test_malformed_sequences_decode_to_none(text: str) -> None:
    assert CODEC.decode(text) is None
    assert CODEC.find_boxes(text) == []


def test_decode_bins_rejects_wrong_length_and_range() -> None:
    assert CODEC.decode_bins([1, 2, 3]) is None
    assert CODEC.decode_bins([0, 0, 0, 0, 0, 0, 128]) is None
    assert CODEC.decode_bins([0] * 7) is not None


@given(st.text(alphabet=st.sampled_from(list("<>loc_0123456789 x")), max_size=80))
@settings(max_examples=200, deadline=None)
def test_arbitrary_text_never_raises(text: str) -> None:
    CODEC.decode(text)
    for box in CODEC.find_boxes(text):
        assert box.shape == (7,) and np.all(np.isfinite(box))


def test_encode_rejects_non_boxes() -> None:
    with pytest.raises(ValueError):
        CODEC.encode(np.zeros(6))
    with pytest.raises(ValueError):
        CODEC.encode(np.array([0, 0, np.nan, 1, 1, 1, 0]))


def test_settings_round_trip_and_validation() -> None:
    settings_ = LocationTokenSettings(num_bins=64, center_range=(-2.0, 2.0))
    assert LocationTokenSettings.from_dict(settings_.to_dict()) == settings_
    with pytest.raises(ConfigError):
        LocationTokenSettings(num_bins=1)
    with pytest.raises(ConfigError):
        LocationTokenSettings(size_range=(0.0, 1.0))
    with pytest.raises(ConfigError):
        LocationTokenSettings.from_dict({"bins": 3})
