r"""The posterior SDE of SDE matching: the drift that keeps a guide's Gaussian marginals."""

import torch
from torch import nn

__all__ = ["PosteriorSDE", "posterior_drift"]


def posterior_drift(eps, scale, dloc, dscale, diffusion, diffusion_sq_grad=None):
    r"""The drift of the SDE whose marginals are :math:`\mathcal N(m(t), s(t)^2)`.

    For :math:`z = m + s\,\epsilon` and diagonal diffusion :math:`g`, the Fokker–Planck
    equation :math:`\partial_t q = -\nabla\cdot(f q) + \tfrac12 \sum_i \partial_i^2(g_i^2 q)`
    holds with

    .. math::

        f_q(z, t) = \underbrace{\dot m + \dot s\,\epsilon}_{\text{moves the marginal}}
            + \tfrac12 \partial_{z_i} g_i^2 + \tfrac12 g_i^2\, \partial_{z_i} \log q,
        \qquad \partial_{z} \log q = -\epsilon / s,

    elementwise: the first part transports :math:`q` deterministically (a probability-flow
    velocity) and the rest cancels what the noise spreads.

    Args:
        eps: :math:`\epsilon`, ``(..., Dz)``; scale, dloc, dscale: :math:`s, \dot m, \dot s`.
        diffusion: :math:`g(z, t)`; diffusion_sq_grad: :math:`\partial_{z_i} g_i^2`
            (``None`` for state-independent diffusion).
    """
    named = (("scale", scale), ("dloc", dloc), ("dscale", dscale), ("diffusion", diffusion),
             ("diffusion_sq_grad", diffusion_sq_grad))
    for name, value in named:
        if value is None:
            continue
        try:
            torch.broadcast_shapes(eps.shape, value.shape)
        except RuntimeError:
            raise ValueError(f"{name} of shape {tuple(value.shape)} does not broadcast with eps "
                             f"of shape {tuple(eps.shape)}") from None
    drift = dloc + dscale * eps - 0.5 * diffusion.square() * eps / scale
    if diffusion_sq_grad is not None:
        drift = drift + 0.5 * diffusion_sq_grad
    return drift


class PosteriorSDE(nn.Module):
    r"""The posterior SDE of SDE matching: the prior's diffusion, the drift that keeps the
    guide's marginals :math:`\mathcal N(m(t), s(t)^2)` (:func:`posterior_drift`).

    .. math::

        dz = f_q(z, t)\,dt + g_\theta(z, t) \odot dW, \qquad
        f_q = \dot m + \dot s\,\epsilon + \tfrac12 \partial_z g_\theta^2
            - \tfrac12 g_\theta^2\,\epsilon / s, \quad \epsilon = (z - m(t)) / s(t).

    Started from :math:`q(z(t_0))`, its paths have the guide's marginals at every time
    (exactly in the limit of small solver steps) and the temporal correlation that the
    diffusion implies; this is the process whose divergence from the prior the ELBO measures.
    ``torchsde``'s protocol, on states ``(S * B, Dz)`` ordered sample-major.

    Args:
        prior_sde: the prior dynamics (its ``diffusion`` and ``diffusion_depends_on_state``).
        marginals (GaussianMarginals): the guide's ``"z"`` site for ``B`` sequences.
        num_sequences (int): ``B``.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, prior_sde, marginals, num_sequences):
        super().__init__()
        self.prior_sde, self.marginals, self.num_sequences = prior_sde, marginals, num_sequences

    def f(self, t, z):
        B = self.num_sequences
        states = z.reshape(-1, B, z.shape[-1])  # (S, B, Dz)
        loc, scale, dloc, dscale = (v.squeeze(-2) for v in self.marginals.rates(t.expand(B, 1)))
        eps = (states - loc) / scale
        with torch.enable_grad():
            inputs = states.detach().requires_grad_(self.prior_sde.diffusion_depends_on_state)
            diffusion = self.prior_sde.diffusion(inputs, t)
            sq_grad = None
            if self.prior_sde.diffusion_depends_on_state:
                sq_grad = torch.autograd.grad(diffusion.square().sum(), inputs)[0]
        drift = posterior_drift(eps, scale, dloc, dscale, diffusion.detach(), sq_grad)
        return drift.reshape(z.shape)

    def g(self, t, z):
        return self.prior_sde.g(t, z)
