"""The branch: grouped dispatch equals the masked reference (outputs and every gradient), the
anti-collapse losses equal hand-computed values, jitter only in training, decoding per position."""

import math

import pytest
import torch
from pydantic import ValidationError

from sigerlm.model.config import SigerConfig
from sigerlm_moe.block import (
    MoEBlock,
    MoEBranch,
    balance_loss,
    capacity_keep,
    importance_loss,
    route,
)
from sigerlm_moe.hooks import MoEOptions

CONFIG = SigerConfig.from_profile("tiny", scan="chunked")


def branch(dispatch, **options):
    torch.manual_seed(0)
    b = MoEBranch(CONFIG, 1, MoEOptions(dispatch=dispatch, jitter=0.0, **options))
    for expert in b.experts:  # the fresh down projections are zero: give them values to compare
        torch.nn.init.normal_(expert.down.weight, std=0.2)
    return b


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("capacity_factor", [None, 0.6])
@pytest.mark.parametrize("expert", ["swiglu", "gelu"])
def test_grouped_dispatch_equals_the_masked_reference_with_all_gradients(top_k, capacity_factor, expert):
    fast = branch("grouped", n_experts=4, top_k=top_k, capacity_factor=capacity_factor, expert=expert)
    ref = branch("masked", n_experts=4, top_k=top_k, capacity_factor=capacity_factor, expert=expert)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(3, 7, 16)
    outs, grads = [], []
    for module in (fast, ref):
        xi = x.clone().requires_grad_()
        out = module(xi)
        aux = module.pop_aux()
        loss = (out * torch.linspace(-1, 1, 16)).pow(2).sum() + aux["losses"]["moe_aux"][1]
        loss.backward()
        outs.append(out)
        grads.append(
            {"x": xi.grad}
            | {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in module.named_parameters()}
        )
        if capacity_factor is not None:
            assert aux["metrics"]["moe_dropped"] > 0  # the limit really drops assignments here
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)
    assert grads[0]["router.weight"].abs().sum() > 0  # the router is trained by the loss


def test_capacity_keeps_first_choices_before_second_choices_and_earlier_tokens_first():
    experts = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 0]])  # (t 4, k 2)
    keep = capacity_keep(experts, 3, capacity=2)
    # expert 0: first choices of tokens 0 and 1 fit, token 2's first choice and token 3's second do not
    # expert 1: token 3's first choice, then token 0's second choice; token 2's second is the third
    assert keep.tolist() == [[True, True], [True, True], [False, False], [True, False]]
    assert capacity_keep(experts, 3, None).all()


def test_top2_weights_are_renormalised_and_top1_keeps_the_probability():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = logits.softmax(-1)
    two = route(logits, 2, None)
    torch.testing.assert_close(two.weights, (p[:, :2] / p[:, :2].sum()))
    one = route(logits, 1, None)
    torch.testing.assert_close(one.weights, p[:, :1])


def test_aux_losses_equal_hand_computed_values_for_a_fixed_router():
    # 4 tokens, 2 experts, top-1; router probabilities chosen by hand
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    routing = route(probs.log(), 1, None)
    assert routing.experts.squeeze(1).tolist() == [0, 0, 0, 1]
    # f = (3/4, 1/4), P = (0.65, 0.35): balance = 2 * (0.75 * 0.65 + 0.25 * 0.35) = 1.15
    assert balance_loss(routing, 2).item() == pytest.approx(1.15, abs=1e-6)
    # importance = 2 * ((0.65 - 0.5)^2 + (0.35 - 0.5)^2) = 0.09
    assert importance_loss(routing, 2).item() == pytest.approx(0.09, abs=1e-6)
    # uniform routing: balance 1, importance 0
    uniform = route(torch.zeros(4, 4), 1, None)
    assert importance_loss(uniform, 4).item() == pytest.approx(0.0, abs=1e-7)

    # the branch reports weight * (balance + importance) through pop_aux, with moe_dead
    b = branch("grouped", n_experts=2, top_k=1, balance_weight=1.0, importance_weight=0.5, aux_loss_weight=0.25)
    x = torch.randn(1, 4, 16)
    with torch.no_grad():
        b.router.weight.zero_()
        b.router.weight[0, 0] = 1.0  # logits from the first normalised feature: a router fixed by hand
        b(x)
    aux = b.pop_aux()
    xn = b.norm(x).reshape(4, 16)
    p = torch.stack([xn[:, 0], torch.zeros(4)], -1).softmax(-1)
    chosen = p.argmax(-1)
    f = torch.bincount(chosen, minlength=2).float() / 4
    expected = 2 * (f * p.mean(0)).sum() + 0.5 * 2 * (p.mean(0) - 0.5).pow(2).sum()
    weight, value = aux["losses"]["moe_aux"]
    assert weight == 0.25
    torch.testing.assert_close(value, expected.float())
    assert aux["metrics"]["moe_dead"] == (0.5 if len(set(chosen.tolist())) == 1 else 0.0)
    assert b.pop_aux() is None  # popped once


def test_jitter_only_in_training():
    b = branch("grouped", n_experts=4, top_k=2)
    b.options = b.options.model_copy(update={"jitter": 0.5})
    x = torch.randn(2, 5, 16)
    b.eval()
    with torch.no_grad():
        assert torch.equal(b(x), b(x))  # no noise in evaluation
    b.train()
    with torch.no_grad():
        torch.manual_seed(1)
        first = b(x)
        torch.manual_seed(2)
        second = b(x)
    assert not torch.equal(first, second)


def test_a_fresh_branch_adds_nothing_and_capacity_is_off_in_eval():
    torch.manual_seed(0)
    b = MoEBranch(CONFIG, 1, MoEOptions(n_experts=4, top_k=2, capacity_factor=0.5))
    x = torch.randn(2, 5, 16)
    assert torch.equal(b(x), x)
    assert b.capacity(10) == math.ceil(0.5 * 10 * 2 / 4)
    assert b.eval().capacity(10) is None


def test_the_block_keeps_the_ssm_names_and_decodes_per_position():
    options = MoEOptions(n_experts=4, top_k=2)
    torch.manual_seed(0)
    layers = [MoEBlock(CONFIG, i, options) for i in range(2)]
    assert layers[0].moe is None and layers[1].moe is not None  # moe_every 2: layer 1
    names = set(layers[1].state_dict())
    from sigerlm.model.block import SSMBlock

    assert set(SSMBlock(CONFIG, 1).state_dict()) <= names
    assert {n for n in names if n.startswith("moe.")} >= {"moe.router.weight", "moe.experts.3.down.weight"}
    block = layers[1].eval()
    for expert in block.moe.experts:
        torch.nn.init.normal_(expert.down.weight, std=0.2)
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        full = block(x)
        state = block.init_state(2)
        steps = []
        for t in range(6):
            y, state = block.step(x[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_options_are_validated():
    with pytest.raises(ValidationError, match=r"top_k \(3\) must not exceed n_experts \(2\)"):
        MoEOptions(n_experts=2, top_k=3)
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        MoEOptions(n_experts=1, top_k=1)
    with pytest.raises(ValidationError, match="moe_layers must list"):
        MoEOptions(moe_layers=[-1])
    with pytest.raises(ValidationError, match="Extra inputs"):
        MoEOptions(experts=4)
    with pytest.raises(ValueError, match="beyond n_layers 2"):
        MoEBlock(CONFIG, 0, MoEOptions(moe_layers=[0, 5]))
