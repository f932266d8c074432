"""Dense Gaussian references for the tests: moments written out from the OU kernel."""

import torch

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
