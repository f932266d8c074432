"""One harness for every transform: log-det against the autograd Jacobian, inverse by round
trip with the cache bypassed, a grid of batch shapes, and gradients to every parameter."""

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_vpf.distributions import OUPath
from pyro_vpf.transforms import (
    ConditionalObservationFlow,
    ContextAffineCoupling,
    FourierTimeEmbedding,
    TimeConditionedFlow,
)

BATCH_SHAPES = [(), (3,), (2, 3)]


def time_flow(dim, num_layers=3, conditioner_layers=1):
    def build(batch_shape, K=4):
        module = TimeConditionedFlow(dim, num_layers, hidden_dim=16, time_embed_dim=8,
                                     conditioner_layers=conditioner_layers)
        times = torch.sort(torch.rand(K)).values * 3
        return module, module.condition, times, batch_shape + (K, dim)

    return build


def time_flow_per_sequence(dim):
    def build(batch_shape, K=4):
        module = TimeConditionedFlow(dim, 2, hidden_dim=16, time_embed_dim=8)
        times = torch.sort(torch.rand(batch_shape[-1:] + (K,)), dim=-1).values
        return module, module.condition, times, batch_shape + (K, dim)

    return build


def observation_flow(obs_dim, latent_dim, event_dim=1, num_layers=3):
    def build(batch_shape, K=4):
        module = ConditionalObservationFlow(
            obs_dim, latent_dim, num_layers, hidden_dim=16, event_dim=event_dim
        )
        steps = (K,) if event_dim == 2 else ()
        z = torch.randn(batch_shape + steps + (latent_dim,))
        return module, module.condition, z, batch_shape + steps + (obs_dim,)

    return build


def single_coupling(dim, context_dim):
    def build(batch_shape):
        module = ContextAffineCoupling(dim, context_dim, hidden_dim=16)
        context = torch.randn(context_dim)  # one context broadcast over the whole batch
        return module, module.condition, context, batch_shape + (dim,)

    return build


CASES = {
    "time_flow_D4": time_flow(4),
    "time_flow_D3": time_flow(3),
    "time_flow_D1": time_flow(1),
    "time_flow_deep_conditioner": time_flow(2, conditioner_layers=3),
    "time_flow_no_layers": time_flow(2, num_layers=0),
    "time_flow_per_sequence_times": time_flow_per_sequence(2),
    "observation_flow_Dx3": observation_flow(3, 2),
    "observation_flow_Dx1": observation_flow(1, 2),
    "observation_flow_sequence_event": observation_flow(2, 3, event_dim=2),
    "coupling_broadcast_context": single_coupling(5, 3),
}


def build_case(name, batch_shape):
    if name == "time_flow_per_sequence_times" and not batch_shape:
        pytest.skip("per-sequence times need a batch dimension")
    module, condition, context, shape = CASES[name](batch_shape)
    module.double()
    # Random weights away from the near-identity initialisation, so the tests see real maps.
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module, condition(context.double()), shape


def event_ndims(transform, shape):
    return transform.domain.event_dim if len(shape) >= transform.domain.event_dim else 0


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("name", list(CASES))
def test_log_det_matches_autograd_jacobian(name, batch_shape):
    _, t, shape = build_case(name, batch_shape)
    event_dim = max(t.domain.event_dim, 1)
    event_shape = shape[len(shape) - event_dim :]
    n_batch, n_event = math.prod(shape[: len(shape) - event_dim]), math.prod(event_shape)
    x = torch.randn(shape, dtype=torch.float64)
    y = t(x)
    assert y.shape == x.shape
    ladj = t.log_abs_det_jacobian(x, y)
    if t.domain.event_dim == 0:  # identity flow: the log-det is elementwise zero
        ladj = ladj.sum(-1).sum(-1) if event_dim == 2 else ladj.sum(-1)
    assert ladj.shape == shape[: len(shape) - event_dim]

    def flat_map(v):
        return t(v.reshape(shape)).reshape(-1)

    J = torch.autograd.functional.jacobian(flat_map, x.reshape(-1).clone())
    J = J.reshape(n_batch, n_event, n_batch, n_event)
    for b in range(n_batch):
        off = J[b].clone()
        off[:, b] = 0
        assert off.abs().max() == 0, "batch elements must not interact"
        expected = torch.linalg.slogdet(J[b, :, b]).logabsdet
        assert torch.allclose(ladj.reshape(-1)[b], expected, atol=1e-9)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("name", list(CASES))
def test_inverse_round_trip_without_cache(name, batch_shape, monkeypatch):
    _, t, shape = build_case(name, batch_shape)
    x = torch.randn(shape, dtype=torch.float64) * 2
    y = t(x)
    # clone(): the transform caches by tensor identity, and we test the inverse, not the cache.
    x_back = t.inv(y.clone())
    assert x_back is not x
    assert torch.allclose(x_back, x, atol=1e-9)
    y_again = t(t.inv(y.clone()).clone())
    assert torch.allclose(y_again, y, atol=1e-9)
    # without autograd the conditioner works in place and in blocks of points (made tiny
    # here so that every case is split): the same map, both directions
    monkeypatch.setattr(ContextAffineCoupling, "rows_per_block", 2)
    with torch.no_grad():
        assert torch.allclose(t(x.clone()), y, atol=1e-12)
        assert torch.allclose(t.inv(y.clone()), x_back, atol=1e-12)
    # the log-det evaluated from the inverse direction agrees with the forward one
    assert torch.allclose(t.log_abs_det_jacobian(x_back, y.clone()), t.log_abs_det_jacobian(x, y))


@pytest.mark.parametrize("name", list(CASES))
def test_every_parameter_gets_a_gradient_through_log_prob(name):
    module, t, shape = build_case(name, (3,))
    event_dim = max(t.domain.event_dim, 1)
    event_shape = shape[len(shape) - event_dim :]
    base = dist.Normal(torch.zeros(event_shape, dtype=torch.float64), 1.0).to_event(event_dim)
    d = dist.TransformedDistribution(base, [t])
    x = torch.randn(shape, dtype=torch.float64)
    params = dict(module.named_parameters())
    if name == "time_flow_no_layers":  # the identity: nothing to train, nothing unused
        assert not params
        assert torch.equal(d.log_prob(x), base.log_prob(x))
        return
    d.log_prob(x).sum().backward()
    for pname, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {pname}"


def test_time_flow_over_ou_path_is_a_path_prior():
    torch.manual_seed(0)
    K, D, B = 6, 3, 2
    flow = TimeConditionedFlow(D, 4, hidden_dim=16).double()
    times = torch.sort(torch.rand(B, K + 1, dtype=torch.float64), dim=-1).values
    y0 = torch.randn(B, D, dtype=torch.float64)
    base = OUPath(y0, times, 0.0, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), 0.7)
    prior = dist.TransformedDistribution(base, flow.condition(times[..., 1:]))
    assert prior.batch_shape == (B,) and prior.event_shape == (K, D)
    z = prior.rsample((5,))
    assert z.shape == (5, B, K, D)
    # change of variables written out: base density of the inverse minus the forward log-det
    t = flow.condition(times[..., 1:])
    y = t.inv(z.clone())
    expected = base.log_prob(y) - t.log_abs_det_jacobian(y, t(y))
    assert torch.allclose(prior.log_prob(z.clone()), expected, atol=1e-9)


def test_time_flow_depends_on_time():
    torch.manual_seed(0)
    flow = TimeConditionedFlow(2, 2, hidden_dim=16)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    y = torch.randn(1, 2).expand(2, 2).unsqueeze(0)  # the same point at two times
    z = flow.condition(torch.tensor([0.1, 0.9]))(y)
    assert not torch.allclose(z[0, 0], z[0, 1])


def test_time_embedding_checks_input_and_scales_time():
    emb = FourierTimeEmbedding(8, time_scale=1000.0)
    out = emb(torch.tensor([0.0, 500.0]))
    assert out.shape == (2, 8)
    unit = FourierTimeEmbedding(8, time_scale=1.0)
    unit.load_state_dict(emb.state_dict())
    assert torch.allclose(out, unit(torch.tensor([0.0, 0.5])), atol=1e-6)
    with pytest.raises(ValueError, match="dtype"):
        emb(torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="embed_dim"):
        FourierTimeEmbedding(5)


def test_context_shape_errors_name_the_argument():
    flow = ConditionalObservationFlow(3, 2, 2, hidden_dim=8)
    with pytest.raises(ValueError, match="z must have shape"):
        flow.condition(torch.randn(4, 5))
    with pytest.raises(ValueError, match="context"):
        ContextAffineCoupling(3, 2, 8).condition(torch.randn(4, 3))


def test_known_periods_are_exact_fixed_features(float64):
    embedding = FourierTimeEmbedding(8, time_scale=10.0, periods=(1.0, 0.5))
    assert embedding.output_dim == 12
    t = torch.tensor([0.0, 0.3, 17.25, 1991.9])
    out = embedding(t)
    assert out.shape == (4, 12)
    angle = 2 * torch.pi * t.unsqueeze(-1) / torch.tensor([1.0, 0.5])
    assert torch.allclose(out[:, 4:6], angle.sin(), atol=1e-9)
    assert torch.allclose(out[:, 10:12], angle.cos(), atol=1e-9)
    assert not any(p is embedding.periods for p in embedding.parameters())  # not learned
    flow = TimeConditionedFlow(2, num_layers=2, hidden_dim=8, time_periods=(1.0,))
    y = torch.randn(3, 5, 2)
    times = torch.linspace(0, 4, 5)
    assert flow.condition(times)(y).shape == (3, 5, 2)
    with pytest.raises(ValueError, match="periods"):
        FourierTimeEmbedding(8, periods=(0.0,))


def test_periodic_only_embedding_repeats_exactly():
    embedding = FourierTimeEmbedding(0, periods=(1.0,))
    assert embedding.output_dim == 2 and not list(embedding.parameters())
    t = torch.tensor([0.3, 7.1])
    assert torch.allclose(embedding(t), embedding(t + 40.0), atol=1e-4)
    with pytest.raises(ValueError, match="embed_dim"):
        FourierTimeEmbedding(0)


def test_learned_time_features_are_clamped_to_the_training_range():
    embedding = FourierTimeEmbedding(8, time_scale=2.0, periods=(0.7,))
    before = torch.tensor([-3.0, 0.5, 9.0])
    unclamped = FourierTimeEmbedding(8, time_scale=2.0, periods=(0.7,), extrapolation="none")
    unclamped.load_state_dict(embedding.state_dict())
    with torch.no_grad():  # evaluation does not widen the range
        assert torch.equal(embedding(before), unclamped(before))  # nothing seen, nothing clamped
    embedding.eval()
    embedding(torch.tensor([50.0]))  # nor does evaluation mode
    embedding.train()
    assert torch.isinf(embedding.time_min) and torch.isinf(embedding.time_max)
    embedding(torch.linspace(0.0, 1.0, 5)).sum().backward()  # a training step sees [0, 1]
    assert embedding.time_min.item() == 0.0 and embedding.time_max.item() == 1.0
    later = torch.tensor([1.0, 4.0, 300.0])
    with torch.no_grad():
        features = embedding(later)
        reference = unclamped(torch.ones(3))
    learned, known = [0, 1, 2, 3, 5, 6, 7, 8], [4, 9]  # [sin(learned, known), cos(...)]
    assert torch.equal(features[:, learned], reference[:, learned])  # frozen at t = 1
    angle = 2 * math.pi * later / 0.7  # the known period keeps its exact phase
    assert torch.allclose(features[:, known], torch.stack([angle.sin(), angle.cos()], -1),
                          atol=1e-4)
    assert not torch.allclose(unclamped(later)[:, learned], reference[:, learned])
    with torch.no_grad():
        early = embedding(torch.tensor([-5.0]))
        assert torch.equal(early[:, learned], unclamped(torch.zeros(1))[:, learned])
    # the range travels with the weights; weights saved without it load with no range
    copy = FourierTimeEmbedding(8, time_scale=2.0, periods=(0.7,))
    copy.load_state_dict(embedding.state_dict())
    assert copy.time_max.item() == 1.0
    old = {k: v for k, v in embedding.state_dict().items() if not k.startswith("time_")}
    copy.load_state_dict(old)
    assert torch.isinf(copy.time_max)
    with pytest.raises(ValueError, match="extrapolation"):
        FourierTimeEmbedding(8, extrapolation="wrap")
