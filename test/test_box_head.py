"""The <box3d> regression head: target encoding round trip, loss, and that it can learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.model.box_head import (
    BoxHead,
    BoxHeadConfig,
    BoxPrediction,
    decode_box_prediction,
    encode_box_target,
    groups_in_boxes,
)

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


def test_groups_in_boxes_picks_the_centres_inside_a_rotated_box_or_the_nearest() -> None:
    centers = torch.tensor([[[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [2.0, 2.0, 2.0]]])
    # a long thin box along y (yaw 90 deg): holds (0,0,0) and (0,0.3,0), not (0.3,0,0)
    box = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.2, 0.2, math.pi / 2]])
    wanted = groups_in_boxes(centers, box, margin=0.0)
    assert torch.allclose(wanted, torch.tensor([[0.5, 0.0, 0.5, 0.0]]))
    tiny_far = torch.tensor([[1.8, 1.9, 2.0, 0.01, 0.01, 0.01, 0.0]])
    assert torch.allclose(groups_in_boxes(centers, tiny_far, margin=0.0), torch.tensor([[0.0, 0.0, 0.0, 1.0]]))


def _one_hot_scenes(count: int, groups: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Scenes whose patch tokens carry a category code; the query names one category, whose group is the box."""
    codes = torch.eye(groups)
    centers = torch.rand(count, groups, 3, generator=generator) * 2 - 1
    order = torch.stack([torch.randperm(groups, generator=generator) for _ in range(count)])
    patch_tokens = codes[order]  # group g of scene b shows category order[b, g]
    wanted = torch.randint(0, groups, (count,), generator=generator)
    hidden = codes[wanted]
    where = (order == wanted[:, None]).float().argmax(dim=1)
    target = torch.cat([centers[torch.arange(count), where], torch.full((count, 3), 0.02), torch.zeros(count, 1)], dim=1)
    return hidden, patch_tokens, centers, target


def test_scene_attention_head_learns_to_find_the_named_object() -> None:
    """Centres are random per scene, so only attending to the right group can give the box centre."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    head = BoxHead(16, BoxHeadConfig(hidden_dim=64, attention_dim=32, context="encoder"), context_dim=16)
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(300):
        hidden, patch_tokens, centers, target = _one_hot_scenes(32, 16, generator)
        loss = head.loss(head(hidden, patch_tokens=patch_tokens, centers=centers), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    hidden, patch_tokens, centers, target = _one_hot_scenes(64, 16, generator)
    with torch.no_grad():
        prediction = head(hidden, patch_tokens=patch_tokens, centers=centers)
    error = (head.decode(prediction)[:, :3] - target[:, :3]).norm(dim=1)
    assert float(error.median()) < 0.05, "centres found on unseen scenes"
    assert float(prediction.attention.max(dim=1).values.mean()) > 0.8
    blind = head(hidden)  # without the scene: the box from the hidden state alone, no attention
    assert blind.attention is None and blind.center.shape == (64, 3)


def test_point_context_head_finds_the_object_by_its_colour() -> None:
    """The head's own PointNet reads raw grouped points: the query names a colour, one group has it."""
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    palette = torch.eye(3)

    def scenes(count: int, groups: int = 12) -> tuple[torch.Tensor, ...]:
        centers = torch.rand(count, groups, 3, generator=generator) * 2 - 1
        xyz = torch.randn(count, groups, 8, 3, generator=generator) * 0.02
        colour_index = torch.randint(0, 3, (count, groups), generator=generator)
        wanted = torch.randint(0, 3, (count,), generator=generator)
        where = torch.randint(0, groups, (count,), generator=generator)
        colour_index[colour_index == wanted[:, None]] = (wanted[:, None].expand_as(colour_index)[colour_index == wanted[:, None]] + 1) % 3
        colour_index[torch.arange(count), where] = wanted  # exactly one group of the wanted colour
        patches = torch.cat([xyz, palette[colour_index][:, :, None].expand(-1, -1, 8, -1)], dim=-1)
        target = torch.cat([centers[torch.arange(count), where], torch.full((count, 3), 0.05), torch.zeros(count, 1)], dim=1)
        return palette[wanted], patches, centers, target

    head = BoxHead(3, BoxHeadConfig(hidden_dim=32, attention_dim=16, context_width=32, context="points"))
    assert head.scene_inputs == ("patches", "centers")
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(400):
        hidden, patches, centers, target = scenes(32)
        loss = head.loss(head(hidden, patches=patches, centers=centers), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    hidden, patches, centers, target = scenes(64)
    with torch.no_grad():
        prediction = head(hidden, patches=patches, centers=centers)
    error = (head.decode(prediction)[:, :3] - target[:, :3]).norm(dim=1)
    assert float(error.median()) < 0.1
    with pytest.raises(ValueError, match="pass patches"):
        head(hidden, patch_tokens=torch.zeros(64, 12, 256), centers=centers)
