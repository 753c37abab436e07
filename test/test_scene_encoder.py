"""Scene encoder end to end: shapes, config round trip, and that it can learn."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.model.point_encoder import PointEncoderConfig
from threed_llm_ros.model.preprocessing import PreprocessConfig, boxes_to_normalized, prepare_scenes
from threed_llm_ros.model.qformer import QFormerConfig
from threed_llm_ros.model.scene_encoder import (
    SCENE_TOKEN_NORM_SCALE,
    SceneEncoder,
    VOTE_OFFSET_UNIT,
    SceneEncoderConfig,
    patch_semantic_labels,
    patch_vote_targets,
)

from threed_llm_helpers import box_cloud


def room_cloud(num_points: int, seed: int, colour: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform([1.0, -2.5, -1.0], [6.0, 2.5, 1.5], size=(num_points, 3)).astype(np.float32)
    if colour is None:
        rgb = rng.uniform(0, 1, size=(num_points, 3))
    else:
        rgb = np.clip(colour + rng.normal(0, 0.05, size=(num_points, 3)), 0, 1)
    return xyz, rgb.astype(np.float32)


def tiny_config() -> SceneEncoderConfig:
    return SceneEncoderConfig(
        preprocess=PreprocessConfig(num_points=256, num_groups=16, group_size=8, up_axis="z"),
        encoder=PointEncoderConfig(num_groups=16, group_size=8, width=32, depth=2, heads=4, patch_channels=16),
        qformer=QFormerConfig(
            num_experts=4, queries_per_expert=4, top_k=2, width=32, depth=1, heads=4, encoder_width=32, router_hidden=16
        ),
        output_dim=24,
    )


def test_mini_end_to_end_shapes() -> None:
    config = SceneEncoderConfig.preset("mini")
    config.preprocess.up_axis = "z"
    torch.manual_seed(0)
    encoder = SceneEncoder(config).eval()
    batch = prepare_scenes([room_cloud(12000, seed=1), room_cloud(9000, seed=2)], config.preprocess)
    with torch.no_grad():
        output = encoder(batch.patches, batch.centers)
        exported = encoder.export_forward(batch.patches, batch.centers)
    assert output.scene_tokens.shape == (2, config.num_scene_tokens, 576)
    assert output.router_probs.shape == output.expert_weights.shape == (2, 8)
    assert output.cls_token.shape == (2, config.encoder.width)
    assert output.load_balance_loss.dim() == 0
    assert torch.isfinite(output.scene_tokens).all()
    assert output.patch_tokens.shape == (2, config.encoder.num_groups, config.encoder.width)
    assert isinstance(exported, tuple) and len(exported) == 3
    assert torch.equal(exported[0], output.scene_tokens) and torch.equal(exported[1], output.expert_weights)
    assert torch.equal(exported[2], output.patch_tokens)


def test_config_json_round_trip_and_validation() -> None:
    for name in ("mini", "base"):
        config = SceneEncoderConfig.preset(name, output_dim=960)
        restored = SceneEncoderConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert restored == config
        assert isinstance(restored.encoder, PointEncoderConfig) and restored.output_dim == 960
    assert SceneEncoderConfig.preset("base").preprocess.num_groups == 512
    with pytest.raises(ConfigError, match="num_groups"):
        SceneEncoderConfig(
            preprocess=PreprocessConfig(num_groups=64),
            encoder=PointEncoderConfig(num_groups=128),
            qformer=QFormerConfig(),
        )
    with pytest.raises(ConfigError, match="unknown key"):
        SceneEncoderConfig.from_dict({**tiny_config().to_dict(), "decoder": {}})


@pytest.fixture
def single_thread():
    """Tiny tensors: one thread is as fast, and far less sensitive to other jobs on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_few_adamw_steps_learn_the_scene_colour(single_thread) -> None:
    """Regress each scene's mean colour from its scene tokens.

    The loss must fall well below that of the best constant guess (the targets' variance),
    which a head ignoring the scene (bias only) could reach.
    """
    config = tiny_config()
    rng = np.random.default_rng(3)
    colours = rng.uniform(0.1, 0.9, size=(8, 3))
    batch = prepare_scenes([room_cloud(600, seed=10 + i, colour=colours[i]) for i in range(8)], config.preprocess)
    target = batch.patches[..., 3:].mean(dim=(1, 2))
    constant_guess_loss = float(((target - target.mean(dim=0)) ** 2).mean())
    torch.manual_seed(0)
    encoder = SceneEncoder(config)
    head = torch.nn.Linear(config.output_dim, 3)
    optimiser = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-3)
    losses = []
    for _ in range(60):
        output = encoder(batch.patches, batch.centers)
        loss = torch.nn.functional.mse_loss(head(output.scene_tokens.mean(dim=1)), target)
        optimiser.zero_grad()
        (loss + output.load_balance_loss).backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses
    assert losses[-1] < 0.5 * constant_guess_loss, (losses[-1], constant_guess_loss)


def test_patch_semantic_labels_follow_the_boxes() -> None:
    """Category/colour per group centre: inside the smallest containing box, yaw respected, 0 outside."""
    boxes = torch.tensor(
        [
            [0.0, 0.0, 0.0, 2.0, 1.0, 1.0, 0.0],  # a table-sized box, category 3, colour 1
            [0.5, 0.0, 0.0, 0.2, 0.2, 0.2, 0.0],  # a cup inside it: its name is unknown to the vocabulary
            [5.0, 0.0, 0.0, 2.0, 0.2, 1.0, np.pi / 2],  # long along y once rotated
        ],
        dtype=torch.float64,
    )
    categories = torch.tensor([3, -1, 0])
    colours = torch.tensor([1, 4, 2])
    centres = torch.tensor(
        [
            [-0.8, 0.3, 0.2],  # in the table box only
            [0.5, 0.05, 0.0],  # in both: the smaller (cup) wins
            [5.0, 0.8, 0.0],  # inside the rotated box
            [5.8, 0.0, 0.0],  # would be inside without the yaw
            [9.0, 9.0, 9.0],  # on nothing
        ],
        dtype=torch.float64,
    )
    labels = patch_semantic_labels(centres, boxes, categories, colours, margin=0.0)
    assert labels.tolist() == [[4, 2], [-100, 5], [1, 3], [0, 0], [0, 0]]
    assert patch_semantic_labels(centres, boxes[:0], categories[:0], colours[:0]).tolist() == [[0, 0]] * 5


def test_presets_condition_the_inputs_and_put_scene_tokens_at_word_scale() -> None:
    """The presets scale group-relative xyz and centre colours, so fresh patch tokens vary more across
    groups than with the raw inputs (which let training collapse the first encoder), and their scene
    tokens start at the RMS of SmolLM2's word embeddings."""
    conditioned = SceneEncoderConfig.preset("mini")
    conditioned.preprocess.up_axis = "z"
    assert conditioned.encoder.local_scale == 25.0 and conditioned.encoder.center_colors
    raw = replace(
        conditioned,
        encoder=replace(conditioned.encoder, local_scale=1.0, center_colors=False),
        output_norm_scale=0.0,
        semantic_categories=[],
        semantic_colors=[],
    )
    batch = prepare_scenes([box_cloud(seed) for seed in (1, 2, 3)], conditioned.preprocess)
    spread = {}
    for name, config in (("conditioned", conditioned), ("raw", raw)):
        torch.manual_seed(0)
        encoder = SceneEncoder(config).eval()
        with torch.no_grad():
            output = encoder(batch.patches, batch.centers)
        patch_tokens = output.patch_tokens
        spread[name] = float(patch_tokens.std(dim=1).mean() / patch_tokens.square().mean().sqrt())
        if name == "conditioned":
            rms = float(output.scene_tokens.square().mean().sqrt())
            assert abs(rms - SCENE_TOKEN_NORM_SCALE) < 0.1 * SCENE_TOKEN_NORM_SCALE, rms
            assert encoder.patch_semantics is not None
        else:
            assert encoder.patch_semantics is None
    assert spread["conditioned"] > 1.5 * spread["raw"], spread


def test_configs_without_the_new_fields_keep_the_first_behaviour() -> None:
    """A checkpoint config written before conditioning, output norm and patch semantics loads as it was trained."""
    values = SceneEncoderConfig.preset("mini").to_dict()
    for key in ("output_norm_scale", "semantic_categories", "semantic_colors"):
        values.pop(key)
    for key in ("local_scale", "center_colors"):
        values["encoder"].pop(key)
    old = SceneEncoderConfig.from_dict(values)
    assert old.output_norm_scale == 0.0 and old.semantic_categories == [] and old.encoder.local_scale == 1.0
    encoder = SceneEncoder(old)
    assert encoder.patch_semantics is None and len(encoder.modality_projector) == 3
    with pytest.raises(ConfigError, match="semantic_categories"):
        SceneEncoderConfig(semantic_categories=["chair"])
    with pytest.raises(ConfigError, match="output_norm_scale"):
        SceneEncoderConfig(output_norm_scale=-1.0)
    with pytest.raises(ConfigError, match="local_scale"):
        PointEncoderConfig(local_scale=0.0)


def test_the_patch_semantics_head_learns_which_groups_lie_on_which_coloured_object(single_thread) -> None:
    """Encoder + head trained on labels from the boxes of coloured objects: the loss falls below the
    best guess that ignores the points (every group the most frequent class)."""
    config = replace(tiny_config(), semantic_categories=["object"], semantic_colors=["a", "b", "c", "d"])
    config.encoder.local_scale, config.encoder.center_colors = 25.0, True
    colours = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], dtype=np.uint8)
    clouds, labels = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        floor = np.column_stack([rng.uniform(-1.5, 1.5, (800, 2)), np.zeros(800)])
        size = rng.uniform(0.8, 1.2, 3)
        centre = np.r_[rng.uniform(-0.5, 0.5, 2), size[2] / 2]
        surface = rng.uniform(-0.5, 0.5, (1500, 3)) * size
        face = rng.integers(0, 3, 1500)
        surface[np.arange(1500), face] = np.sign(surface[np.arange(1500), face]) * size[face] / 2
        colour = seed % 4
        xyz = np.concatenate([floor, surface + centre])
        rgb = np.concatenate([np.full((800, 3), 120, dtype=np.uint8), np.tile(colours[colour], (1500, 1))])
        clouds.append((xyz, rgb))
        labels.append((np.r_[centre, size, 0.0], colour))
    batch = prepare_scenes(clouds, config.preprocess)
    metres = torch.as_tensor(np.stack([box for box, _ in labels])).reshape(len(labels), 1, 7)
    normalized = boxes_to_normalized(metres, batch)
    targets = torch.stack(
        [
            patch_semantic_labels(batch.centers[index].double(), normalized[index], torch.tensor([0]), torch.tensor([colour]))
            for index, (_, colour) in enumerate(labels)
        ]
    )
    on_object = float((targets[..., 0] > 0).float().mean())
    assert 0.1 < on_object < 0.9, on_object  # both classes present
    torch.manual_seed(0)
    encoder = SceneEncoder(config)
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        output = encoder(batch.patches, batch.centers)
        category_logits, colour_logits = encoder.patch_semantics(output.patch_tokens)
        loss = torch.nn.functional.cross_entropy(category_logits.reshape(-1, 2), targets[..., 0].reshape(-1))
        loss = loss + torch.nn.functional.cross_entropy(colour_logits.reshape(-1, 5), targets[..., 1].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    prior = lambda counts: float(-(counts / counts.sum() * torch.log(counts / counts.sum()).nan_to_num()).sum())  # noqa: E731
    constant_guess = prior(torch.bincount(targets[..., 0].flatten(), minlength=2).double()) + prior(
        torch.bincount(targets[..., 1].flatten(), minlength=5).double()
    )
    assert losses[-1] < 0.5 * constant_guess, (losses[-1], constant_guess)


def _word_encoder(
    word_groups: int = 3, word_instances: bool = False, colors: tuple[str, ...] = ("red", "blue", "green")
) -> SceneEncoder:
    config = replace(tiny_config(), semantic_categories=["cup", "chair"], semantic_colors=list(colors),
                     word_groups=word_groups, word_instances=word_instances)
    torch.manual_seed(0)
    encoder = SceneEncoder(config).eval()
    generator = torch.Generator().manual_seed(1)
    encoder.set_word_embeddings(torch.randn(2, 24, generator=generator), torch.randn(len(colors), 24, generator=generator))
    return encoder


def test_word_tokens_are_the_word_rows_of_the_groups_the_head_finds_on_objects() -> None:
    encoder = _word_encoder()
    config = encoder.config
    assert config.num_scene_tokens == config.qformer.queries_per_expert + 6
    batch = prepare_scenes([room_cloud(600, seed=1)], config.preprocess)
    # A head that is sure: groups 2, 5 and 9 lie on a "blue cup", a "green chair" and a "red cup";
    # every other group is background.
    labels = torch.zeros(16, 2, dtype=torch.long)
    labels[2], labels[5], labels[9] = torch.tensor([1, 2]), torch.tensor([2, 3]), torch.tensor([1, 1])
    category_logits = torch.full((1, 16, 3), -30.0)
    category_logits[0, torch.arange(16), labels[:, 0]] = 30.0
    color_logits = torch.full((1, 16, 4), -30.0)
    color_logits[0, torch.arange(16), labels[:, 1]] = 30.0
    with torch.no_grad():
        words = encoder.words_from_semantics(category_logits, color_logits, batch.centers).reshape(3, 2, 24)
        position = encoder.word_position(batch.centers[0].float())
    expected = {
        group: (encoder.color_words[labels[group, 1] - 1], encoder.category_words[labels[group, 0] - 1] + position[group])
        for group in (2, 5, 9)
    }
    found = [
        group for colour_token, category_token in words for group, (colour, category) in expected.items()
        if torch.allclose(colour_token, colour, atol=1e-5) and torch.allclose(category_token, category, atol=1e-5)
    ]
    assert sorted(found) == [2, 5, 9]
    # the encoder's own forward appends 3 such pairs after the queries
    with torch.no_grad():
        output = encoder(batch.patches, batch.centers)
        own_words = encoder.word_tokens(output.patch_tokens, batch.centers)
    queries = config.qformer.queries_per_expert
    assert output.scene_tokens.shape == (1, queries + 6, 24)
    assert torch.allclose(output.scene_tokens[:, queries:], own_words)


def test_word_tokens_need_the_semantics_head_and_fit_the_groups() -> None:
    with pytest.raises(ConfigError, match="word_groups"):
        replace(tiny_config(), word_groups=4)
    with pytest.raises(ConfigError, match="word_groups"):
        replace(tiny_config(), semantic_categories=["cup"], semantic_colors=["red"], word_groups=17)
    plain = SceneEncoder(tiny_config())
    assert plain.word_position is None and not any("word" in name for name in plain.state_dict())
    with pytest.raises(ValueError, match="word_groups"):
        plain.set_word_embeddings(torch.zeros(1, 24), torch.zeros(1, 24))
    encoder = _word_encoder()
    assert not any(name.endswith("_words") for name in encoder.state_dict())  # the LM's rows are not saved twice
    with pytest.raises(ValueError, match="word embeddings"):
        encoder.set_word_embeddings(torch.zeros(3, 24), torch.zeros(3, 24))
    restored = SceneEncoderConfig.from_dict(json.loads(json.dumps(encoder.config.to_dict())))
    assert restored.word_groups == 3 and restored.num_scene_tokens == encoder.config.num_scene_tokens


def test_vote_targets_point_each_group_at_its_objects_centre_and_size() -> None:
    """Each group on an object votes for that object's box (the smaller box where two hold it);
    groups on nothing have no target."""
    boxes = torch.tensor(
        [
            [0.0, 0.0, 0.0, 2.0, 1.0, 0.8, 0.0],  # a table
            [0.5, 0.0, 0.0, 0.2, 0.2, 0.3, 0.0],  # a cup inside the table's box
        ],
        dtype=torch.float64,
    )
    centres = torch.tensor([[-0.8, 0.3, 0.2], [0.55, 0.05, 0.1], [4.0, 4.0, 4.0]], dtype=torch.float64)
    votes = patch_vote_targets(centres, boxes, margin=0.0)
    assert votes.shape == (3, 6) and votes.dtype == torch.float32
    expected_table = torch.tensor([0.8, -0.3, -0.2]) / VOTE_OFFSET_UNIT
    assert torch.allclose(votes[0, :3], expected_table, atol=1e-5)
    assert torch.allclose(votes[0, 3:], torch.log(torch.tensor([2.0, 1.0, 0.8])), atol=1e-6)
    assert torch.allclose(votes[1, :3], torch.tensor([-0.05, -0.05, -0.1]) / VOTE_OFFSET_UNIT, atol=1e-5)
    assert torch.allclose(votes[1, 3:], torch.log(torch.tensor([0.2, 0.2, 0.3])), atol=1e-6)
    assert torch.isnan(votes[2]).all()
    assert torch.isnan(patch_vote_targets(centres, boxes[:0])).all()
    # where a group has a vote target it also has a category, and the other way round
    labels = patch_semantic_labels(centres, boxes, torch.tensor([0, 1]), torch.tensor([0, 1]), margin=0.0)
    assert ((labels[:, 0] > 0) == torch.isfinite(votes).all(dim=1)).all()


def test_instance_word_tokens_name_each_voted_object_once() -> None:
    """Groups that vote for the same object under the same category collapse into the likeliest
    group's pair; a second chair beside it, or a cup at the same place, keep their own pairs; the
    kept pairs carry the voted centre and size."""
    encoder = _word_encoder(word_groups=4, word_instances=True, colors=("red", "blue"))
    groups = 16
    centres = torch.zeros(1, groups, 3)
    centres[0, :, 0] = torch.linspace(-0.9, 0.9, groups)
    category = torch.zeros(groups, dtype=torch.long)
    votes = torch.zeros(1, groups, 6)
    object_of = {}
    # (group, category id (1 cup, 2 chair), background logit (lower = likelier on an object),
    #  voted object centre, object size)
    layout = [
        (3, 2, -4.0, (0.0, 0.0, 0.0), (0.5, 0.5, 0.9)),  # chair A, likeliest
        (4, 2, -3.0, (0.3, 0.2, 0.0), (0.5, 0.5, 0.9)),  # chair A again, 0.36 off
        (9, 2, -2.0, (0.7, 0.0, 0.0), (0.5, 0.5, 0.9)),  # chair B, 0.7 away: beyond half the diagonal (0.57)
        (10, 1, -1.0, (0.01, 0.0, 0.0), (0.1, 0.1, 0.1)),  # a cup where chair A is
    ]
    for group, category_id, _, voted, size in layout:
        category[group] = category_id
        votes[0, group, :3] = (torch.tensor(voted) - centres[0, group]) / VOTE_OFFSET_UNIT
        votes[0, group, 3:] = torch.log(torch.tensor(size))
        object_of[group] = (torch.tensor(voted), torch.log(torch.tensor(size)))
    # background everywhere but the layout's groups, whose background logit orders them
    category_logits = torch.full((1, groups, 3), -30.0)
    category_logits[0, :, 0] = 30.0
    for group, category_id, background, _, _ in layout:
        category_logits[0, group, 0] = background
        category_logits[0, group, category_id] = 0.0
    color_logits = torch.zeros(1, groups, 3)
    with torch.no_grad():
        words = encoder.words_from_semantics(category_logits, color_logits, centres, votes).reshape(4, 2, 24)
        kept = [bool(pair.abs().sum() > 0) for pair in words]
        assert kept == [True, False, True, True]  # chair A, (chair A again), chair B, cup
        for slot, group in ((0, 3), (2, 9), (3, 10)):
            centre, log_size = object_of[group]
            expected = (
                encoder.category_words[category[group] - 1]
                + encoder.word_position(centre[None])[0]
                + encoder.word_size(log_size[None])[0]
            )
            assert torch.allclose(words[slot, 1], expected, atol=1e-4)
    # the language model's gradient reaches the position and size embeddings through kept pairs
    words = encoder.words_from_semantics(category_logits, color_logits, centres, votes)
    words.square().sum().backward()
    for module in (encoder.word_position, encoder.word_size):
        assert all(parameter.grad is not None and bool(parameter.grad.abs().sum() > 0) for parameter in module.parameters())
    with torch.no_grad():
        # without votes an instance encoder refuses, rather than silently naming groups
        with pytest.raises(ValueError, match="votes"):
            encoder.words_from_semantics(category_logits, color_logits, centres)
        # its own forward appends the four pairs after the queries, votes from its head
        output = encoder(torch.zeros(1, groups, 8, 6), centres)
        assert output.scene_tokens.shape == (1, encoder.config.qformer.queries_per_expert + 8, 24)
        assert encoder.patch_semantics.votes(output.patch_tokens).shape == (1, groups, 6)


def test_instance_word_tokens_need_word_tokens_and_old_configs_have_none() -> None:
    with pytest.raises(ConfigError, match="word_instances"):
        replace(tiny_config(), semantic_categories=["cup"], semantic_colors=["red"], word_instances=True)
    values = _word_encoder().config.to_dict()
    values.pop("word_instances")
    old = SceneEncoder(SceneEncoderConfig.from_dict(values))
    assert old.word_size is None and old.patch_semantics.geometry is None
    assert not any("geometry" in name or "word_size" in name for name in old.state_dict())
