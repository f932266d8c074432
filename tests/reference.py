"""Dense Gaussian references for the tests: moments written out from the OU kernel."""

import pyro
import pyro.distributions as dist
import torch

from pyro_vpf.sites import SEQUENCES, Z0, Z

D64 = torch.float64


def ou_path_moments(times, m0, s0, mu, kappa, sigma):
    """Mean and covariance of z_{0:K} (flattened time-major, (K+1)*D) of a diagonal OU
    process with a Gaussian start N(m0, s0^2) at times[0]:

    Cov(z_i, z_j) = e^{-k(t_i + t_j - 2 t_0)} s0^2
                    + e^{-k|t_i - t_j|} sigma^2 (1 - e^{-2k(min(t_i, t_j) - t_0)}) / (2k).
    """
    t = times - times[0]
    K1, D = t.shape[0], m0.shape[0]
    mean = torch.empty(K1, D, dtype=D64)
    cov = torch.zeros(K1, D, K1, D, dtype=D64)
    for d in range(D):
        k = kappa[d]
        tmin = torch.minimum(t[:, None], t[None, :])
        c = torch.exp(-k * (t[:, None] + t[None, :])) * s0[d] ** 2
        c = c + torch.exp(-k * (t[:, None] - t[None, :]).abs()) * sigma[d] ** 2 * (
            -torch.expm1(-2 * k * tmin)
        ) / (2 * k)
        cov[:, d, :, d] = c
        mean[:, d] = mu[d] + torch.exp(-k * t) * (m0[d] - mu[d])
    return mean.reshape(-1), cov.reshape(K1 * D, K1 * D)


def dense_joint(model, times):
    """Prior moments of z (flattened) and of x for one sequence, from the OU kernel."""
    p, o = model.prior, model.obs_linear
    mz, Sz = ou_path_moments(times, p.init_loc, p.init_scale, p.ou_mean, p.ou_rate, p.ou_scale)
    H = torch.block_diag(*[o.weight] * times.shape[0])
    mx = H @ mz + o.bias.repeat(times.shape[0])
    Sx = H @ Sz @ H.T + torch.diag(o.noise_scale.square().repeat(times.shape[0]))
    return mz.detach(), Sz.detach(), H.detach(), mx.detach(), Sx.detach()


class DensePosteriorGuide:
    """The exact posterior p(z_{0:K} | x_observed) of a linear-Gaussian VPF by dense
    conditioning, as a guide with the sites z0 and z | z0 (covariance optionally inflated).
    ``times`` is (B, K+1); ``mask`` (B, K+1, Dx) selects the entries conditioned on."""

    def __init__(self, model, x, times, inflate=1.0, mask=None):
        locs, covs = [], []
        K1, DX = x.shape[1:]
        self.K1, self.DZ = K1, model.latent_dim
        for b in range(x.shape[0]):
            mz, Sz, H, _, _ = dense_joint(model, times[b])
            keep = torch.ones(K1 * DX, dtype=torch.bool) if mask is None else mask[b].reshape(-1)
            H = H[keep]
            R = torch.diag(model.obs_linear.noise_scale.detach().square().repeat(K1)[keep])
            precision = torch.linalg.inv(Sz) + H.T @ torch.linalg.inv(R) @ H
            cov = torch.linalg.inv(precision)
            resid = (x[b].reshape(-1) - model.obs_linear.bias.detach().repeat(K1))[keep]
            loc = cov @ (torch.linalg.solve(Sz, mz) + H.T @ torch.linalg.solve(R, resid))
            locs.append(loc)
            covs.append(0.5 * (cov + cov.T) * inflate)
        self.loc, self.cov = torch.stack(locs), torch.stack(covs)

    def __call__(self, x, times, mask=None, **kwargs):
        loc, cov, d = self.loc, self.cov, self.DZ
        with pyro.plate(SEQUENCES, x.shape[0], dim=-1):
            z0 = pyro.sample(Z0, dist.MultivariateNormal(loc[:, :d], cov[:, :d, :d]))
            s12 = cov[:, d:, :d] @ torch.linalg.inv(cov[:, :d, :d])
            cond_loc = loc[:, d:] + (s12 @ (z0 - loc[:, :d]).unsqueeze(-1)).squeeze(-1)
            cond_cov = cov[:, d:, d:] - s12 @ cov[:, :d, d:]
            flat = dist.MultivariateNormal(cond_loc, 0.5 * (cond_cov + cond_cov.mT))
            reshape = torch.distributions.transforms.ReshapeTransform(
                ((self.K1 - 1) * d,), (self.K1 - 1, d))
            pyro.sample(Z, dist.TransformedDistribution(flat, reshape))


def set_likelihood_potentials(guide, obs):
    """The smoother guide's per-channel potentials set to the likelihood of a linear-Gaussian
    observation x = C z + d + N(0, r^2) (u_i = c_i / r_i, a_i = 1 / r_i, o_i = -d_i / r_i,
    no corrections)."""
    with torch.no_grad():
        r = obs.noise_scale
        guide.channel_direction.copy_(obs.weight / r.unsqueeze(-1))
        guide.channel_gain.copy_(1 / r)
        guide.channel_offset.copy_(-obs.bias / r)
        guide.potential_head[-1].weight.zero_()
        guide.potential_head[-1].bias.zero_()
