"""The <box3d> regression head: target encoding round trip, loss, and that it can learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.model.box_head import BoxHead, BoxHeadConfig, BoxPrediction, decode_box_prediction, encode_box_target

BOX = st.tuples(
    *[st.floats(-1.2, 1.2)] * 3, *[st.floats(0.005, 2.5)] * 3, st.floats(-math.pi, math.pi, exclude_max=True)
).map(lambda values: np.array(values))


@given(st.lists(BOX, min_size=1, max_size=4))
@settings(max_examples=100, deadline=None)
def test_decode_of_encoded_target_is_the_box(boxes: list[np.ndarray]) -> None:
    target = torch.tensor(np.stack(boxes), dtype=torch.float64)
    decoded = decode_box_prediction(encode_box_target(target))
    assert torch.allclose(decoded[:, :6], target[:, :6], atol=1e-9, rtol=1e-9)
    yaw_error = torch.remainder(decoded[:, 6] - target[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert torch.all(yaw_error.abs() < 1e-9)
    assert torch.all((decoded[:, 6] >= -math.pi) & (decoded[:, 6] < math.pi))


def test_loss_is_zero_at_the_target_and_grows_with_error() -> None:
    head = BoxHead(16)
    target = torch.tensor([[0.1, 0.2, -0.3, 0.5, 0.4, 0.3, 3.1], [0.0, 0.0, 0.0, 0.1, 0.1, 0.1, -3.1]])
    perfect = encode_box_target(target)
    assert head.loss(perfect, target).item() == pytest.approx(0.0, abs=1e-7)
    shifted = BoxPrediction(perfect.center + 0.3, perfect.log_size, perfect.yaw_sin_cos)
    turned = encode_box_target(target + torch.tensor([0, 0, 0, 0, 0, 0, math.pi / 2]))
    assert head.loss(shifted, target).item() > 0.1
    assert head.loss(turned, target).item() > 0.1
    # yaw just below +pi and just above -pi are 0.08 rad apart: a small loss, not a huge one
    wrapped = encode_box_target(target * torch.tensor([1, 1, 1, 1, 1, 1, -1.0]))
    assert head.loss(wrapped, target).item() < 0.01


def test_head_learns_boxes_from_hidden_states() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(8, 32)
    target = torch.cat([torch.rand(8, 3) * 2 - 1, torch.rand(8, 3) + 0.05, torch.rand(8, 1) * 6 - 3], dim=1)
    head = BoxHead(32, BoxHeadConfig(hidden_dim=64))
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    first = head.loss(head(hidden), target).item()
    for _ in range(300):
        loss = head.loss(head(hidden), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.1 * first
    decoded = head.decode(head(hidden)).detach()
    assert decoded.shape == (8, 7)
    assert torch.allclose(decoded[:, :3], target[:, :3], atol=0.1)


def test_config_round_trip_and_validation() -> None:
    config = BoxHeadConfig(hidden_dim=32, yaw_weight=2.0)
    assert BoxHeadConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError):
        BoxHeadConfig(hidden_dim=0)
    with pytest.raises(ConfigError):
        BoxHeadConfig.from_dict({"width": 3})
