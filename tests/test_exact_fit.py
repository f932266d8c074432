"""The exact fit of a linear-Gaussian VPF (fit_exact) and its exact posterior as a guide."""

import kalman_reference
import pyro
import pytest
import torch
from pyro.distributions import MultivariateNormal
from pyro_vpf.guides import ExactPosterior
from pyro_vpf.models import VPF
from reference import ou_path_moments

from pyro_vpf.evaluation import forecast, kalman_log_likelihood
from pyro_vpf.evaluation.estimators import log_weights
from pyro_vpf.infer import fit_exact, load_checkpoint
from tests.test_exact_bases import dense_joint, observations, per_sequence_times, structured_model

D64 = torch.float64


def test_every_draw_of_the_exact_posterior_scores_the_exact_evidence():
    # q = p(z | x), so log p(x, z) - log q(z) = log p(x) at every draw: against the Kalman
    # evidence, for a structured base, entry masks and per-sequence irregular times
    model = structured_model()
    times = per_sequence_times()
    x, mask = observations(True)
    guide = ExactPosterior(model)
    weights = log_weights(model, guide, x, times, mask, num_particles=16)
    with torch.no_grad():  # the sequential Kalman filter of the tests, an independent route
        expected = kalman_reference.kalman_log_likelihood(model, x, times, mask)
    assert torch.allclose(weights, expected.expand_as(weights), rtol=1e-8, atol=1e-8)


def test_exact_posterior_marginals_are_the_dense_conditional():
    model = structured_model()
    times = per_sequence_times()[0]
    x, _ = observations(False)
    x = x[:1]
    mz, Sz, W, mx, Sx = dense_joint(model, times)
    gain = Sz @ W.T @ torch.linalg.inv(Sx)
    loc = (mz + gain @ (x.reshape(-1) - mx)).reshape(-1, 2)
    cov = Sz - gain @ W @ Sz
    with torch.no_grad():
        q = ExactPosterior(model).marginal(x, times, times[[0, 3, 6]])
    for j, k in enumerate((0, 3, 6)):
        block = cov[2 * k:2 * k + 2, 2 * k:2 * k + 2]
        assert torch.allclose(q.loc[0, j], loc[k], atol=1e-8)
        assert torch.allclose(q.covariance_matrix[0, j], block, atol=1e-8)
    with pytest.raises(ValueError, match="query_times"):
        ExactPosterior(model).marginal(x, times, times[:1] + 0.01)


def test_exact_posterior_has_no_parameters_and_refuses_other_models():
    model = structured_model()
    guide = ExactPosterior(model)
    assert list(guide.parameters()) == [] and guide.state_dict() == {}
    with pytest.raises(ValueError, match="linear-Gaussian"):
        ExactPosterior(VPF(3, 2, hidden_dim=8, num_flow_layers=1))
    with pytest.raises(ValueError, match="linear-Gaussian"):
        ExactPosterior(VPF(3, 2, hidden_dim=8, num_flow_layers=0))


def _ar1_series(num_points, seed=0):
    """One series of an AR(1) latent path observed with noise: a VPF with an OU base on a
    unit grid, standardised."""
    pyro.set_rng_seed(seed)
    truth = VPF(1, 1, 8, num_flow_layers=0, observation="linear_gaussian",
                time_scale=10.0).double()
    times = torch.arange(num_points, dtype=D64)
    with torch.no_grad():
        x = truth.observation_distribution(truth.prior.sample(times, 1)).sample()
    return truth, (x - x.mean()) / x.std(), times


@pytest.mark.slow
def test_exact_fit_reaches_the_maximum_likelihood_of_statsmodels():
    # The OU base on a unit grid is an AR(1) latent path plus noise: the family of statsmodels'
    # SARIMAX(1, 0, 0) with an intercept and measurement error, fitted there by exact maximum
    # likelihood (its own optimiser and Kalman filter). The VPF also learns the law of its
    # first state; given that law ("known" initialisation), statsmodels' maximum must be the
    # VPF's. Measured: they agree to 1e-10 per point; with statsmodels' stationary start the
    # VPF is 1.7e-3 per point higher (its start is free), never lower.
    sarimax = pytest.importorskip("statsmodels.tsa.statespace.sarimax")
    K = 1000
    truth, x, times = _ar1_series(K)
    model = VPF(1, 1, 8, num_flow_layers=0, observation="linear_gaussian",
                time_scale=10.0).double()
    fit_exact(model, x, times, num_steps=300, lr=0.05, progress=False)
    with torch.no_grad():
        fitted = kalman_log_likelihood(model, x, times).item() / K
        simulating = kalman_log_likelihood(truth, x, times).item() / K
    p, o = model.prior, model.obs_linear
    W, d = o.weight.item(), o.bias.item()
    y = x[0, :, 0].numpy()
    start = {"initialization": "known", "initial_state": [W * p.init_loc.item() + d],
             "initial_state_cov": [[(W * p.init_scale.item()) ** 2]]}
    same_start = sarimax.SARIMAX(y, order=(1, 0, 0), trend="c", measurement_error=True,
                                 **start).fit(disp=False).llf / K
    stationary = sarimax.SARIMAX(y, order=(1, 0, 0), trend="c",
                                 measurement_error=True).fit(disp=False).llf / K
    assert abs(fitted - same_start) < 1e-4, (fitted, same_start)
    assert fitted >= stationary - 1e-6
    assert fitted > simulating


def test_fit_exact_keeps_fits_contract(tmp_path):
    # checkpoints, and a resumed run equal to an uninterrupted one (the objective is exact:
    # no draws, so equal to the last bit)
    times = per_sequence_times()
    x, mask = observations(True)
    pyro.clear_param_store()  # each run as in a fresh process: Adam's state is kept by name
    straight = structured_model()
    history = fit_exact(straight, x, times, mask, num_steps=6, lr=0.01, progress=False)
    assert len(history) == 6
    with torch.no_grad():
        evidence = kalman_log_likelihood(straight, x, times, mask)
    # the recorded loss is minus the exact evidence of the parameters before each update (by
    # the sequential Kalman filter of the tests)
    with torch.no_grad():
        start = kalman_reference.kalman_log_likelihood(structured_model(), x, times, mask)
    assert history.loss[0] == pytest.approx(-start.sum().item(), rel=1e-10)
    path = str(tmp_path / "exact.pt")
    pyro.clear_param_store()
    fit_exact(structured_model(), x, times, mask, num_steps=3, lr=0.01, progress=False,
              checkpoint_path=path)
    step, _, config = load_checkpoint(path, structured_model(),
                                      ExactPosterior(structured_model()))
    assert step == 3 and config["lr"] == 0.01
    pyro.clear_param_store()
    resumed = structured_model()
    fit_exact(resumed, x, times, mask, num_steps=6, lr=0.01, progress=False, resume=path)
    with torch.no_grad():
        assert torch.equal(kalman_log_likelihood(resumed, x, times, mask), evidence)
    with pytest.raises(ValueError, match="beta"):
        fit_exact(straight, x, times, mask, num_steps=1, beta=0.5, progress=False)
    with pytest.raises(ValueError, match="linear-Gaussian"):
        fit_exact(VPF(3, 2, hidden_dim=8, num_flow_layers=1).double(), x, times, mask,
                  num_steps=1, progress=False)


def test_forecast_with_the_exact_posterior_is_the_kalman_prediction():
    # an OU base: the forecast of z at t_K + h given x is Gaussian with the filtered mean at
    # t_K decayed towards the mean; compare the draws' moments with the dense Gaussian
    truth, x, times = _ar1_series(30, seed=1)
    future = torch.tensor([30.0, 33.0], dtype=D64)
    torch.manual_seed(0)
    draws = forecast(truth, ExactPosterior(truth), x, times, future, num_samples=4000)["z"]
    # dense reference: the OU kernel's joint Gaussian of z at every time, conditioned on x
    all_times = torch.cat([times, future])
    p = truth.prior
    with torch.no_grad():
        mean, cov = ou_path_moments(all_times, p.init_loc, p.init_scale, p.base_mean,
                                    p.base.rate, p.base.scale)
    o = truth.obs_linear
    n = times.shape[0]
    W = o.weight.detach()[0, 0]
    Sxx = W ** 2 * cov[:n, :n] + o.noise_scale.detach().square() * torch.eye(n, dtype=D64)
    Sfx = W * cov[n:, :n]
    gain = Sfx @ torch.linalg.inv(Sxx)
    loc = mean[n:] + gain @ (x[0, :, 0] - (W * mean[:n] + o.bias.detach()))
    var = cov[n:, n:] - gain @ Sfx.T
    reference = MultivariateNormal(loc, var)
    got = draws[:, 0, :, 0]
    sd = reference.covariance_matrix.diagonal().sqrt()
    # 4 000 draws: the mean within 4 standard errors, the variance within 10 %
    assert ((got.mean(0) - reference.loc).abs() < 4 * sd / 4000 ** 0.5).all()
    assert torch.allclose(got.var(0), reference.covariance_matrix.diagonal(), rtol=0.1)
