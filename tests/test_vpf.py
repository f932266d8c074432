import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro_vpf.guides import AffineGuide
from pyro_vpf.models import VPF

from pyro_vpf.infer import fit
from pyro_vpf.sites import Z0, X, Z

B, K1, DX, DZ = 5, 9, 3, 2


def tiny(obs_dim=DX, latent_dim=DZ, seed=0):
    torch.manual_seed(seed)
    model = VPF(obs_dim, latent_dim, hidden_dim=16, num_flow_layers=2, num_obs_flow_layers=2)
    guide = AffineGuide(obs_dim, latent_dim, hidden_dim=16)
    return model, guide


def data(per_sequence=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, K1, DX, generator=g)
    if per_sequence:
        times = torch.sort(torch.rand(B, K1, generator=g), dim=-1).values * 2 + 0.5
    else:
        times = torch.linspace(0, 1, K1)
    return x, times


def traces(model, guide, *args, **kwargs):
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return model_trace, guide_trace


@pytest.mark.parametrize("per_sequence", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "points", "entries"])
def test_site_shapes(per_sequence, mask_kind):
    model, guide = tiny()
    x, times = data(per_sequence)
    mask = None
    if mask_kind == "points":
        mask = torch.rand(B, K1) > 0.3
    elif mask_kind == "entries":
        mask = (torch.rand(B, K1) > 0.3).unsqueeze(-1).expand(B, K1, DX).clone()
    mt, gt = traces(model, guide, x, times, mask)
    for tr in (mt, gt):
        assert tr.nodes[Z0]["fn"].event_shape == (DZ,)
        assert tr.nodes[Z]["fn"].event_shape == (K1 - 1, DZ)
        assert tr.nodes[Z0]["value"].shape == (B, DZ)
        assert tr.nodes[Z]["value"].shape == (B, K1 - 1, DZ)
        assert tr.nodes[Z]["log_prob"].shape == (B,)
    assert mt.nodes[X]["fn"].event_shape == (K1, DX)
    assert mt.nodes[X]["fn"].batch_shape == (B,)
    assert mt.nodes[X]["log_prob"].shape == (B,)
    assert mt.nodes[X]["is_observed"]


def test_every_parameter_gets_a_gradient():
    model, guide = tiny()
    x, times = data(per_sequence=True)
    loss = Trace_ELBO().differentiable_loss(model, guide, x, times)
    loss.backward()
    for owner in (model, guide):
        for name, p in owner.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"
    # and every one of them is in the param store, so SVI's optimiser sees it
    store = set(pyro.get_param_store().keys())
    assert {f"vpf$$${n}" for n, _ in model.named_parameters()} <= store
    assert {f"affine_guide$$${n}" for n, _ in guide.named_parameters()} <= store


def test_masked_entries_change_nothing():
    model, guide = tiny()
    x, times = data()
    mask = torch.ones(B, K1, dtype=torch.bool)
    mask[1, 3] = mask[4, 0] = mask[2, -1] = False
    x_other = x.clone()
    x_other[1, 3] = float("nan")
    x_other[4, 0] = 1e6
    x_other[2, -1] = -7.0
    losses = []
    for data_x in (x, x_other):
        pyro.set_rng_seed(3)
        losses.append(Trace_ELBO().differentiable_loss(model, guide, data_x, times, mask))
    assert torch.equal(losses[0], losses[1])
    # and the masked likelihood is the full one without those points' terms
    pyro.set_rng_seed(4)
    mt, _ = traces(model, guide, x, times, mask)
    z = torch.cat([mt.nodes[Z0]["value"].unsqueeze(-2), mt.nodes[Z]["value"]], dim=-2)
    per_point = model.observation_distribution(z).base_dist.log_prob(x)  # (B, K1)
    assert torch.allclose(mt.nodes[X]["log_prob"], (per_point * mask).sum(-1), atol=1e-5)


def test_partially_observed_points_are_refused():
    model, guide = tiny()
    x, times = data()
    mask = torch.ones(B, K1, DX, dtype=torch.bool)
    mask[0, 2, 1] = False
    with pytest.raises(ValueError, match="mask"):
        model(x, times, mask)


def test_subsampling_plate():
    model, guide = tiny()
    x, times = data(per_sequence=True)
    mt, gt = traces(model, guide, x, times, batch_size=2)
    assert mt.nodes[X]["value"].shape == (2, K1, DX)
    assert torch.equal(mt.nodes["sequences"]["value"], gt.nodes["sequences"]["value"])
    assert mt.nodes[X]["scale"] == pytest.approx(B / 2)


def test_model_samples_observations_when_x_is_none():
    model, _ = tiny()
    times = torch.linspace(0, 1, K1)
    tr = poutine.trace(model).get_trace(None, times, num_sequences=4)
    assert tr.nodes[X]["value"].shape == (4, K1, DX)
    assert not tr.nodes[X]["is_observed"]


def test_sample_prior_at_any_resolution():
    model, _ = tiny()
    with torch.no_grad():
        z, x = model.sample_prior(torch.linspace(0, 1, 10_001), num_samples=3)
    assert z.shape == (3, 10_001, DZ) and x.shape == (3, 10_001, DX)
    assert torch.isfinite(z).all() and torch.isfinite(x).all()
    # decoded with observation noise: two draws of x given the same z differ
    x2 = model.observation_distribution(z[:, :5]).sample()
    x3 = model.observation_distribution(z[:, :5]).sample()
    assert not torch.allclose(x2, x3)


def test_guide_posterior_uses_each_sequence_own_time():
    _, guide = tiny()
    x, times = data()
    query = torch.tensor([0.05, 0.5, 0.77, 1.4])
    loc, scale = guide.posterior(x, times, query)
    assert loc.shape == (B, 4, DZ) and (scale > 0).all()
    # shifting and stretching the clock (grid and query alike) changes nothing
    loc2, scale2 = guide.posterior(x, 3.0 + 10 * times, 3.0 + 10 * query)
    assert torch.allclose(loc, loc2, atol=1e-5) and torch.allclose(scale, scale2, atol=1e-5)


def test_elbo_improves_on_a_tiny_problem():
    model, guide = tiny()
    x = torch.sin(torch.linspace(0, 3, K1)).expand(B, K1).unsqueeze(-1).repeat(1, 1, DX)
    x = x + 0.1 * torch.randn(B, K1, DX)
    history = fit(model, guide, x, torch.linspace(0, 1, K1), num_steps=60, lr=1e-2,
                  progress=False)
    first, last = sum(history.loss[:10]) / 10, sum(history.loss[-10:]) / 10
    assert last < first - 0.2 * abs(first)


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    x, times = data(per_sequence=True)
    kwargs = dict(lr=1e-2, batch_size=3, progress=False)
    pyro.set_rng_seed(0)
    model, guide = tiny(seed=7)
    fit(model, guide, x, times, num_steps=6, **kwargs)
    reference = {k: v.clone() for k, v in {**model.state_dict(), **guide.state_dict()}.items()}

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = tiny(seed=7)
    path = str(tmp_path / "ckpt.pt")
    fit(model, guide, x, times, num_steps=3, checkpoint_path=path, **kwargs)
    pyro.clear_param_store()
    pyro.set_rng_seed(123)  # a different global state: the checkpoint must restore it
    model, guide = tiny(seed=99)
    history = fit(model, guide, x, times, num_steps=6, resume=path, **kwargs)
    assert len(history) == 6
    resumed = {**model.state_dict(), **guide.state_dict()}
    for k, v in reference.items():
        assert torch.equal(resumed[k], v), k  # bit-exact: every RNG and the optimiser resume


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model, guide = tiny()
    x, times = data()
    path = str(tmp_path / "ckpt.pt")

    def poison(step, history):
        if step == 3:
            with torch.no_grad():
                model.obs_flow.couplings[0].output_layer.bias.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match="step 4.*ckpt.pt"):
        fit(model, guide, x, times, num_steps=10, checkpoint_path=path, checkpoint_every=2,
            callback=poison, progress=False)
    saved = torch.load(path, weights_only=False)
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    "args, name",
    [
        (lambda x, t: (x[..., :2], t, None), "x"),
        (lambda x, t: (x.masked_fill(torch.zeros_like(x, dtype=torch.bool).index_fill(1, torch.tensor([2]), True), float("nan")), t, None), "x"),  # noqa: E501
        (lambda x, t: (x, t.flip(0), None), "times"),
        (lambda x, t: (x, t[:-1], None), "x"),
        (lambda x, t: (x, t.double(), None), "times"),
        (lambda x, t: (x, t, torch.ones(B, K1 + 1, dtype=torch.bool)), "mask"),
        (lambda x, t: (x, t, torch.ones(B, K1)), "mask"),
        (lambda x, t: (x, t.expand(B + 1, K1), None), "times"),
    ],
)
def test_bad_inputs_raise_value_error(args, name):
    model, guide = tiny()
    x, times = data()
    bad = args(x, times)
    for program in (model, guide):
        with pytest.raises(ValueError, match=name):
            program(*bad)


@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
def test_fit_with_masks_irregular_times_particles_and_annealing(elbo):
    model, guide = tiny()
    x, times = data(per_sequence=True)
    mask = torch.rand(B, K1) > 0.2
    mask[:, 0] = True
    history = fit(model, guide, x, times, mask, num_steps=4, batch_size=3, num_particles=3,
                  elbo=elbo, kl_anneal_steps=4, kl_start=0.2, progress=False)
    assert len(history) == 4
    assert history.kl_weight == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert all(torch.isfinite(torch.tensor(history.loss)))


def test_fit_rejects_bad_settings():
    model, guide = tiny()
    x, times = data()
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, guide, x, times, num_steps=1, batch_size=B + 1, progress=False)
    with pytest.raises(ValueError, match="elbo"):
        fit(model, guide, x, times, num_steps=1, elbo="bogus", progress=False)


def test_linear_gaussian_observation_takes_single_missing_entries():
    torch.manual_seed(0)
    model = VPF(DX, DZ, hidden_dim=8, num_flow_layers=0, observation="linear_gaussian")
    guide = AffineGuide(DX, DZ, hidden_dim=8)
    x, times = data()
    mask = torch.ones(B, K1, DX, dtype=torch.bool)
    mask[0, 2, 1] = mask[3, 5, 0] = False
    x_other = x.clone()
    x_other[0, 2, 1] = float("nan")
    losses = []
    for data_x in (x, x_other):
        pyro.set_rng_seed(3)
        losses.append(Trace_ELBO().differentiable_loss(model, guide, data_x, times, mask))
    assert torch.equal(losses[0], losses[1])
    mt, _ = traces(model, guide, x, times, mask)
    z = torch.cat([mt.nodes[Z0]["value"].unsqueeze(-2), mt.nodes[Z]["value"]], dim=-2)
    per_entry = model.obs_linear.point_distribution(z).log_prob(x)
    assert torch.allclose(mt.nodes[X]["log_prob"], (per_entry * mask).sum((-1, -2)), atol=1e-5)
    with pytest.raises(ValueError, match="observation"):
        VPF(DX, DZ, observation="poisson")
