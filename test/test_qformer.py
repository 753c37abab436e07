"""Mixture of Query Experts: top-k routing, sparse gradients, load balancing, determinism."""

from __future__ import annotations

import pytest
import torch

from threed_llm_ros.errors import ConfigError
from threed_llm_ros.model.qformer import MixtureOfQueryExperts, QFormerConfig

SMALL = QFormerConfig(
    num_experts=6, queries_per_expert=4, top_k=2, width=32, depth=2, heads=4, encoder_width=24, router_hidden=16
)


def build(seed: int = 0, config: QFormerConfig = SMALL) -> MixtureOfQueryExperts:
    torch.manual_seed(seed)
    return MixtureOfQueryExperts(config)


def encoder_tokens(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 9, SMALL.encoder_width, generator=torch.Generator().manual_seed(seed))


def test_router_picks_exactly_top_k_experts() -> None:
    mixture = build().eval()
    with torch.no_grad():
        output = mixture(encoder_tokens(7, seed=1))
    assert output.queries.shape == (7, 4, 32)
    torch.testing.assert_close(output.router_probs.sum(dim=-1), torch.ones(7))
    assert ((output.expert_weights != 0).sum(dim=-1) == 2).all()
    torch.testing.assert_close(output.expert_weights.sum(dim=-1), torch.ones(7))
    top_two = output.router_probs.topk(2, dim=-1).indices.sort(dim=-1).values
    assert torch.equal((output.expert_weights != 0).nonzero()[:, 1].view(7, 2), top_two)
    # The weights are the chosen probabilities renormalised.
    chosen_probs = torch.where(output.expert_weights != 0, output.router_probs, torch.zeros(()))
    torch.testing.assert_close(output.expert_weights, chosen_probs / chosen_probs.sum(dim=-1, keepdim=True))


def test_output_is_the_weighted_mix_of_every_expert_run_alone() -> None:
    """Running all experts and weighting by expert_weights must equal the sparse forward."""
    mixture = build().eval()
    tokens = encoder_tokens(3, seed=2)
    with torch.no_grad():
        output = mixture(tokens)
        keys = mixture.encoder_norm(tokens)
        every_expert = mixture.expert_queries[None].expand(3, -1, -1, -1)
        for block in mixture.blocks:
            every_expert = block(every_expert, keys)
        expected = (mixture.final_norm(every_expert) * output.expert_weights[:, :, None, None]).sum(dim=1)
    torch.testing.assert_close(output.queries, expected, atol=1e-5, rtol=1e-5)


def test_gradients_reach_only_the_chosen_experts() -> None:
    mixture = build().train()
    output = mixture(encoder_tokens(2, seed=3))
    (output.queries.square().sum() + output.load_balance_loss).backward()
    chosen = sorted(set((output.expert_weights != 0).nonzero()[:, 1].tolist()))
    unchosen = sorted(set(range(SMALL.num_experts)) - set(chosen))
    assert len(unchosen) >= 2
    gradient = mixture.expert_queries.grad
    assert gradient is not None
    assert all(bool(gradient[expert].abs().sum() > 0) for expert in chosen)
    assert all(bool((gradient[expert] == 0).all()) for expert in unchosen)
    # The router learns too (through the mixing weights and the balance loss).
    assert mixture.router[-1].weight.grad is not None and mixture.router[-1].weight.grad.abs().sum() > 0


def test_load_balance_loss_is_positive_finite_and_smallest_when_balanced() -> None:
    mixture = build()
    output = mixture(encoder_tokens(4, seed=4))
    loss = output.load_balance_loss
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    uniform = torch.full((6, 6), 1 / 6)
    balanced_choice = torch.tensor([[0, 1], [2, 3], [4, 5], [0, 1], [2, 3], [4, 5]])
    collapsed_probs = torch.tensor([[0.5, 0.3, 0.05, 0.05, 0.05, 0.05]]).expand(6, 6)
    collapsed_choice = torch.tensor([[0, 1]]).expand(6, 2)
    balanced = mixture.load_balance_loss(uniform, balanced_choice)
    collapsed = mixture.load_balance_loss(collapsed_probs, collapsed_choice)
    torch.testing.assert_close(balanced, torch.tensor(SMALL.load_balance_weight))
    assert collapsed > 2 * balanced


def test_fixed_seed_gives_identical_outputs() -> None:
    tokens = encoder_tokens(3, seed=5)
    with torch.no_grad():
        first = build(seed=7).eval()(tokens)
        second = build(seed=7).eval()(tokens)
        other = build(seed=8).eval()(tokens)
    assert torch.equal(first.queries, second.queries)
    assert torch.equal(first.expert_weights, second.expert_weights)
    assert not torch.equal(first.queries, other.queries)


def test_config_validation_presets_and_round_trip() -> None:
    assert QFormerConfig.from_dict(SMALL.to_dict()) == SMALL
    base = QFormerConfig.preset("base")
    assert (base.num_experts, base.queries_per_expert, base.top_k) == (8, 32, 2)
    with pytest.raises(ConfigError, match="top_k"):
        QFormerConfig(num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="encoder_tokens"):
        build()(torch.randn(2, 9, SMALL.encoder_width + 1))
