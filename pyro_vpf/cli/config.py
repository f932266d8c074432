r"""What a command-line run is: its settings (:class:`TrainConfig`, saved with the run), its
data and the model and guide it builds, for any model of the collection."""

import warnings
from dataclasses import dataclass, fields

import torch

__all__ = ["MODELS", "SMOOTHING_BASES", "TrainConfig", "build", "load_data", "make_elbo"]

#: The models a run can train (the VPF and the latent neural SDE).
MODELS = ("vpf", "sde")


@dataclass
class TrainConfig:
    """Every setting of a run; saved as ``config.json`` next to its results."""

    # data
    num_sequences: int = 1280
    num_points: int = 41
    t_end: float = 1.0
    obs_noise: float = 0.01
    irregular: bool = False
    missing_rate: float = 0.0
    test_fraction: float = 0.2
    # model and guide
    model: str = "vpf"
    likelihood: str = "flow"
    latent_dim: int = 4
    hidden_dim: int = 64
    num_flow_layers: int = 4
    num_obs_flow_layers: int = 4
    conditioner_layers: int = 1
    base: str = "ou"
    guide: str = ""  # "": pyro_vpf.guides.DEFAULT_GUIDE ("affine" for the latent SDE)
    # optimisation
    num_steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    num_particles: int = 1
    elbo: str = "trace"
    kl_anneal_steps: int = 0
    clip_norm: float = 10.0
    checkpoint_every: int = 250
    eval_particles: int = 16
    seed: int = 0
    device: str = "cpu"
    # data-parallel training (pyro_vpf.infer.lightning.fit_distributed, `distributed` extra)
    devices: int = 1
    num_nodes: int = 1
    strategy: str = ""

    def __post_init__(self):
        from pyro_vpf.data.lorenz import check_lorenz_settings
        from pyro_vpf.guides import DEFAULT_GUIDE, GUIDES
        from pyro_vpf.infer.core import OptimSettings
        from pyro_vpf.models.path_model import LIKELIHOODS
        from pyro_vpf.processes import BASES

        if self.guide == "":
            self.guide = "affine" if self.model == "sde" else DEFAULT_GUIDE
        for name in ("devices", "num_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, allowed in (("model", MODELS), ("likelihood", LIKELIHOODS),
                              ("guide", tuple(GUIDES)), ("base", tuple(BASES))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got "
                                 f"{getattr(self, name)!r}")
        if self.model == "sde" and self.base != "ou":
            raise ValueError("base belongs to the VPF's prior; the latent SDE (model 'sde') "
                             "has its own learned dynamics: leave base at 'ou'")
        if self.model == "sde" and self.guide != "affine":
            raise ValueError("the latent SDE trains by SDE matching, which needs the affine "
                             f"guide's continuous-time marginals: use guide 'affine', not "
                             f"{self.guide!r}")
        OptimSettings(lr=self.lr, clip_norm=self.clip_norm, kl_anneal_steps=self.kl_anneal_steps,
                      num_particles=self.num_particles)  # the training loop's own checks
        for name, low in (("num_steps", 0), ("batch_size", 1), ("checkpoint_every", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        check_lorenz_settings(self.num_sequences, self.num_points, self.t_end, self.obs_noise,
                              self.missing_rate, test_fraction=self.test_fraction)

    @property
    def distributed(self):
        """Whether the run trains with :func:`~pyro_vpf.infer.lightning.fit_distributed`:
        more than one device or node, or a Lightning strategy named."""
        return self.devices > 1 or self.num_nodes > 1 or bool(self.strategy)

    @classmethod
    def fast(cls, **overrides):
        """Tiny sizes for tests: seconds, not minutes."""
        small = dict(num_sequences=24, num_points=9, hidden_dim=16, num_flow_layers=2,
                     num_obs_flow_layers=2, num_steps=6, batch_size=8, checkpoint_every=3,
                     eval_particles=2)
        small.update(overrides)
        return cls(**small)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(**values)


def load_data(config):
    """The (train, test) split of stochastic Lorenz sequences that ``config`` describes."""
    from pyro_vpf.data import stochastic_lorenz

    train, test = stochastic_lorenz(
        config.num_sequences, config.num_points, config.t_end, obs_noise=config.obs_noise,
        irregular=config.irregular, missing_rate=config.missing_rate,
        test_fraction=config.test_fraction, seed=config.seed,
    )
    device = torch.device(config.device)
    return train.to(device), test.to(device)


#: The bases that need the Markov guide. With independent marginals (affine, flow guides) their
#: trained priors' draws are far from the data (measured for matern32, matern52, trend+cycle).
SMOOTHING_BASES = ("matern32", "matern52", "matern32+ou", "trend+cycle")


def build(config, obs_dim):
    """A fresh ``(model, guide)`` pair for ``config`` on its device.

    ``config.model`` is ``"vpf"`` (a :class:`~pyro_vpf.models.VPF` with the base
    ``config.base`` of :data:`pyro_vpf.processes.BASES`) or ``"sde"`` (a
    :class:`~pyro_vpf.models.LatentSDE`), with the likelihood ``config.likelihood``
    (``"flow"`` or ``"linear_gaussian"``); ``config.guide`` a name of
    :data:`pyro_vpf.guides.GUIDES`. With a structured base the Markov guide's smoother takes
    the model's base as its reference (``MarkovGuide(..., base=model.prior.base)``).
    """
    from pyro_vpf.guides import GUIDES
    from pyro_vpf.models import VPF, LatentSDE
    from pyro_vpf.processes import make_base

    if config.model == "sde":
        model = LatentSDE(obs_dim, config.latent_dim, config.hidden_dim,
                          config.num_obs_flow_layers, time_scale=config.t_end,
                          conditioner_layers=config.conditioner_layers,
                          observation=config.likelihood)
        guide = GUIDES[config.guide](obs_dim, config.latent_dim, config.hidden_dim)
        return model.to(config.device), guide.to(config.device)
    if config.base in SMOOTHING_BASES and not config.guide.startswith("markov"):
        warnings.warn(
            f"base {config.base!r} with the {config.guide!r} guide: a guide with independent "
            "marginals drags a structured prior toward rough paths (its prior draws were "
            "measured orders of magnitude off, benchmarks/bench_bases.py); use --guide markov, "
            "whose smoother takes the base as its reference", UserWarning, stacklevel=2)
    model = VPF(obs_dim, config.latent_dim, config.hidden_dim, config.num_flow_layers,
                config.num_obs_flow_layers, time_scale=config.t_end,
                conditioner_layers=config.conditioner_layers, observation=config.likelihood,
                base=make_base(config.base, config.t_end))
    if config.guide == "markov" and config.base != "ou":  # the smoother's reference: the base
        guide = GUIDES["markov"](obs_dim, config.latent_dim, config.hidden_dim,
                                 base=model.prior.base)
    else:
        guide = GUIDES[config.guide](obs_dim, config.latent_dim, config.hidden_dim)
    return model.to(config.device), guide.to(config.device)


def make_elbo(config):
    """The objective of a run: ``config.elbo`` for the VPF, SDE matching for the latent SDE."""
    if config.model == "sde":
        from pyro_vpf.infer import SDEMatchingELBO

        return SDEMatchingELBO(num_particles=config.num_particles, num_time_samples=16)
    return config.elbo
