r"""The one associative scan of the library, in two executions with equal results.

An inclusive scan of elements :math:`e_0, \dots, e_{K-1}` under an associative operator
:math:`\otimes` returns the prefixes :math:`e_0 \otimes \dots \otimes e_k` (or, reversed, the
suffixes :math:`e_k \otimes \dots \otimes e_{K-1}`). Every linear-Gaussian chain operation
of the library is one: an affine recurrence (elements :math:`x \mapsto A x + b`), the
covariance recurrence :math:`P \mapsto A P A^\top + S`, the Kalman filter and the backward
information filter (the elements of Särkkä & García-Fernández, 2021, IEEE TAC 66(1)).

* :func:`parallel_scan`: recursive odd--even reduction. Adjacent pairs combine into one
  element, the half-length sequence is scanned, and one more batched combine fills in the
  other half: about :math:`2K` combines in :math:`2\lceil\log_2 K\rceil` sequential levels,
  every level one batched call of the operator. Right for long sequences and for GPUs.
* :func:`sequential_scan`: :math:`K - 1` combines one after the other, each batched over
  everything but time. Less work (no second half-sweep), more Python-level steps: faster on
  a CPU for short sequences or large states.

Both are built from out-of-place operations only, so autograd differentiates them as they
are. :func:`scan` picks one by :func:`choose_execution`'s documented rule unless the caller
names it.
"""

import torch

__all__ = ["EXECUTIONS", "SEQUENTIAL_MAX_STEPS", "SEQUENTIAL_MIN_WORK", "choose_execution",
           "parallel_scan", "scan", "sequential_scan"]

#: the executions a caller may name; ``"auto"`` applies :func:`choose_execution`
EXECUTIONS = ("auto", "parallel", "sequential")

#: below this many steps a sequential loop on a CPU costs no more Python-level calls than the
#: parallel scan's levels would spend in extra work (measured: ``benchmarks/bench_chain.py``)
SEQUENTIAL_MAX_STEPS = 256

#: below this many multiply-adds per step (batch x state size cubed) a CPU spends a step's
#: time in the fixed cost of its operator calls, of which the parallel scan makes fewer
SEQUENTIAL_MIN_WORK = 2 ** 16


def choose_execution(num_steps, state_dim, device, execution="auto", work=None):
    r"""The execution of a chain operation: ``execution`` if the caller named one, else
    the rule below.

    * On an accelerator (any device but the CPU) the parallel scan: its
      :math:`2\lceil\log_2 K\rceil` levels are a handful of kernel launches, where a loop
      would launch :math:`K` times as many.
    * On a CPU, the sequential loop when a step carries at least
      :data:`SEQUENTIAL_MIN_WORK` multiply-adds (``work``: the batch of matrices times
      ``state_dim`` cubed) and there are at most :data:`SEQUENTIAL_MAX_STEPS` steps; the
      parallel scan otherwise. On a CPU the cost of both is the arithmetic plus a fixed cost
      per operator call: the parallel scan does about twice the arithmetic (every element is
      combined on the way up and again on the way down) in :math:`O(\log K)` calls, the loop
      the arithmetic once in :math:`O(K)` calls. Small steps (a few small matrices shared by
      every path) are all fixed cost, so fewer calls win; large ones (a state per path) are
      all arithmetic, so less work wins. ``benchmarks/bench_chain.py`` measures both over a
      grid of sizes and reports where the rule switches.

    Args:
        num_steps (int): :math:`K`, the number of elements scanned.
        state_dim (int): the size of the chain's state.
        device (torch.device): where the chain lives.
        execution (str): one of :data:`EXECUTIONS`.
        work (int, optional): multiply-adds of one step; default ``state_dim`` cubed.

    Returns:
        str: ``"parallel"`` or ``"sequential"``.

    Raises:
        ValueError: if ``execution`` is not one of :data:`EXECUTIONS`.
    """
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
    if execution != "auto":
        return execution
    if torch.device(device).type != "cpu":
        return "parallel"
    work = state_dim ** 3 if work is None else work
    if num_steps <= SEQUENTIAL_MAX_STEPS and work >= SEQUENTIAL_MIN_WORK:
        return "sequential"
    return "parallel"


def _take(elements, index):
    return [None if t is None else t[index] for t in elements]


def parallel_scan(combine, elements, reverse=False, needed=None):
    r"""Inclusive scan of ``elements`` under ``combine`` by odd--even reduction.

    Args:
        combine (callable): ``combine(earlier, later)`` -> the element of the segment
            ``earlier`` followed by ``later``; each argument a list of tensors with the
            element index on dim 0 (the two lists have equal lengths there), batched
            elementwise over it. Must be associative.
        elements (list of torch.Tensor): tensors with the element index on dim 0 (equal
            sizes ``K`` there); their other dimensions are the combine's business.
        reverse (bool): suffixes :math:`e_k \otimes \dots \otimes e_{K-1}` instead of
            prefixes.
        needed (tuple of int, optional): the components of the result the caller reads, for
            an operator that can skip the others: called as ``combine(earlier, later,
            needed=needed)``, it must return those components (``None`` for the rest) from
            the same components of ``earlier`` and all of ``later``. An affine recurrence
            reads only its vectors (``needed=(1,)``), and then no product of its matrices
            is formed but those the pairs need. A reversed scan computes every component
            (a suffix reads the matrices of what follows it) and drops the others.

    Returns:
        list of torch.Tensor: the prefixes (or suffixes), shaped as the combine returns
        them, with ``K`` on dim 0 (``None`` for components not ``needed``).
    """
    elements = list(elements)
    if reverse:  # suffixes of e are the prefixes of the reversed sequence, operands swapped
        # (a suffix reads the matrices of what follows it: every component is computed)
        flipped = [t.flip(0) for t in elements]
        out = parallel_scan(lambda first, second: combine(second, first), flipped)
        return [t.flip(0) if needed is None or i in needed else None
                for i, t in enumerate(out)]
    K = elements[0].shape[0]
    if K < 2:
        return [t if needed is None or i in needed else None for i, t in enumerate(elements)]
    half = K // 2
    # pairs (2i, 2i+1) combine into the element that ends at 2i+1
    pairs = combine(_take(elements, slice(0, 2 * half, 2)),
                    _take(elements, slice(1, 2 * half, 2)))
    odd = parallel_scan(combine, pairs, needed=needed)  # the prefixes that end at 2i+1
    # the prefix that ends at 2i (i >= 1) is the one at 2i-1 followed by e_{2i}
    earlier, later = _take(odd, slice(0, (K - 1) // 2)), _take(elements, slice(2, K, 2))
    rest = combine(earlier, later) if needed is None else combine(earlier, later,
                                                                   needed=needed)
    even = [None if r is None else _cat([e[:1], r]) for e, r in zip(elements, rest,
                                                                     strict=True)]
    if K % 2:
        odd = [None if o is None else torch.cat([o, torch.zeros_like(o[:1])]) for o in odd]
    out = []
    for e, o in zip(even, odd, strict=True):
        if e is None or o is None:
            out.append(None)
            continue
        shape = torch.broadcast_shapes(e.shape[1:], o.shape[1:])
        e, o = e.expand(e.shape[:1] + shape), o.expand(o.shape[:1] + shape)
        out.append(torch.stack([e, o], dim=1).flatten(0, 1)[:K])
    return out


def _cat(parts):
    """Concatenate on dim 0 tensors whose other dimensions broadcast."""
    shape = torch.broadcast_shapes(*(p.shape[1:] for p in parts))
    return torch.cat([p.expand(p.shape[:1] + shape) for p in parts])


def sequential_scan(combine, elements, reverse=False, needed=None):
    r"""The same scan as :func:`parallel_scan`, one combine after the other.

    Each combine is batched over everything but the element index; there is one per
    element. Same arguments and results.
    """
    elements = list(elements)
    K = elements[0].shape[0]
    order = range(K - 1, -1, -1) if reverse else range(K)
    # unbind, not a slice per step: the backward of K slices would write K full-size
    # gradients, that of one unbind stacks the K pieces once
    pieces = [t.unbind(0) for t in elements]
    out = [None] * K
    acc = None
    for k in order:
        element = [p[k].unsqueeze(0) for p in pieces]
        if acc is None:
            acc = element
        elif reverse:  # a suffix reads the matrices of what follows it: all components
            acc = combine(element, acc)
        else:
            acc = combine(acc, element) if needed is None else combine(acc, element,
                                                                      needed=needed)
        out[k] = acc
    return [None if needed is not None and i not in needed
            else _cat([step[i] for step in out]) for i in range(len(elements))]


def scan(combine, elements, reverse=False, execution="auto", state_dim=1, needed=None):
    r"""Inclusive scan of ``elements`` under ``combine``, executed as :func:`choose_execution`
    picks (``execution`` one of :data:`EXECUTIONS`; the work of a step is estimated from
    the size of the largest element tensor and ``state_dim``); arguments as for
    :func:`parallel_scan`."""
    elements = list(elements)
    work = max(t[0].numel() for t in elements) * state_dim
    chosen = choose_execution(elements[0].shape[0], state_dim, elements[0].device, execution,
                              work=work)
    run = parallel_scan if chosen == "parallel" else sequential_scan
    return run(combine, elements, reverse, needed)
