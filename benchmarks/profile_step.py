"""Where the SVI step's time goes, at the demo and the seed configuration.

For each configuration, in one process (components timed interleaved with the step, medians):

* the SVI step (``SVI(model, guide, Adam, Trace_ELBO()).step``, validation off);
* the forward and backward passes of its parts on the step's own shapes: the two flows
  (``bench_train.flows_pass``), the guide's GRU encoder, and for the Markov guide the
  conditioning of its reference chain on the encoder's potentials
  (:func:`~pyro_vpf.distributions.gauss_markov_posterior`) and the draw and density of the
  resulting path; each with its share of the step;
* the operators with the most self CPU time over a few steps (``torch.profiler``).

Configurations: ``demo`` (B 128, 41 points, Dz 4, hidden 64, 4 + 4 couplings) with the affine
and the Markov guide; ``seed`` (B 256 of 1 024, hidden 128, 6 + 6 couplings with two-layer
conditioners) with the affine guide.

    python benchmarks/profile_step.py            # about three minutes
    python benchmarks/profile_step.py --quick    # tiny sizes, seconds
"""

import argparse

import pyro
import torch
from bench_train import flows_pass, median_times
from pyro.distributions import MultivariateNormal
from pyro.infer import SVI, Trace_ELBO
from pyro_vpf.guides import AffineGuide, MarkovGuide
from pyro_vpf.models import VPF
from torch.profiler import ProfilerActivity, profile

from pyro_vpf.data import stochastic_lorenz
from pyro_vpf.distributions import GaussMarkovPath

CONFIGS = {
    "demo": {"batch": 128, "hidden": 64, "layers": 4, "depth": 1},
    "seed": {"batch": 256, "hidden": 128, "layers": 6, "depth": 2},
}
QUICK = {"batch": 8, "hidden": 16, "layers": 2, "depth": 1}


def components(model, guide, x, times):
    """Callables running the forward and backward pass of each part of the step."""
    params = list(model.parameters()) + list(guide.parameters())

    def zero():
        for p in params:
            p.grad = None

    with torch.no_grad():
        z_all = guide.marginal(x, times, times).sample()

    def flows():
        zero()
        flows_pass(model, z_all[:, 0], z_all[:, 1:], x, times)

    def encoder():
        zero()
        steps, summary = guide.encoder(x, times)
        (steps.sum() + summary.sum()).backward()

    parts = {"two flows": flows, "guide's GRU encoder": encoder}
    if isinstance(guide, MarkovGuide):
        with torch.no_grad():
            precision, information = guide.potentials(x, times)
            chain = guide.parameters_of(x, times)

        def conditioning():
            zero()
            J, h = (t.clone().requires_grad_() for t in (precision, information))
            out = guide._conditioned(times.expand(x.shape[0], -1), J, h)
            sum(t.sum() for t in out).backward()

        def path():
            zero()
            m0, L0, A, b, L = (t.clone().requires_grad_() for t in chain)
            start = MultivariateNormal(m0, scale_tril=L0)
            z0 = start.rsample()
            d = GaussMarkovPath(z0, A, b, L)
            z = d.rsample()
            (d.log_prob(z).sum() + start.log_prob(z0).sum() + z.sum()).backward()

        parts["Markov guide: conditioning (gauss_markov_posterior)"] = conditioning
        parts["Markov guide: path draw and density"] = path
    return parts


def top_ops(step, steps, rows):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:rows]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return [(e.key, e.count // steps, e.self_cpu_time_total / total) for e in events]


def run(name, sizes, guide_class, repeats, x, times):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = VPF(3, 4, sizes["hidden"], sizes["layers"], sizes["layers"],
                conditioner_layers=sizes["depth"])
    guide = guide_class(3, 4, sizes["hidden"])
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    batch = x[:sizes["batch"]]

    def step():
        svi.step(batch, times)

    parts = components(model, guide, batch, times)
    timed = median_times([step, *parts.values()], repeats)
    print(f"\n{name} configuration (B {sizes['batch']}, hidden {sizes['hidden']}, "
          f"{sizes['layers']} + {sizes['layers']} couplings, conditioner depth "
          f"{sizes['depth']}), {guide_class.__name__}, {torch.get_num_threads()} threads")
    print(f"  {'SVI step':<60}{timed[0] * 1e3:8.1f} ms")
    for label, seconds in zip(parts, timed[1:], strict=True):
        print(f"  {label + ', fwd+bwd':<60}{seconds * 1e3:8.1f} ms  {seconds / timed[0]:6.1%}")
    print("  operators by self CPU time (share of the profiled steps):")
    for key, count, share in top_ops(step, 3, 8):
        print(f"    {key:<44}{count:6d}/step  {share:6.1%}")
    return timed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 15)
    pyro.enable_validation(False)
    train, _ = stochastic_lorenz(1280 if not args.quick else 40, 41, 1.0, seed=0)
    x, times = train.x, train.times
    demo = QUICK if args.quick else CONFIGS["demo"]
    seed = QUICK if args.quick else CONFIGS["seed"]
    results = {}
    for guide_class in (AffineGuide, MarkovGuide):
        results[f"demo {guide_class.__name__}"] = run("demo", demo, guide_class, repeats,
                                                      x, times)
    ratio = results["demo MarkovGuide"][0] / results["demo AffineGuide"][0]
    print(f"\ndemo configuration: Markov / affine step {ratio:.2f}")
    results["seed"] = run("seed", seed, AffineGuide, repeats, x, times)
    return results


if __name__ == "__main__":
    main()
