
import math

import pytest
import torch

from pyro_vpf.nn import GRUEncoder, LocalTimeAttention


def naive_local_attention(grid, contexts, present, query, window, sharpness):
    """Per query: its fractional grid position p, the indices i with |i - p| < W/2 (W
    consecutive ones), softmax of the kernel times the taper cos^2(pi (i - p) / W)."""
    B, K1, H = contexts.shape
    out = torch.empty(B, query.shape[1], H)
    W = min(window, K1)
    for b in range(B):
        g = grid[b].tolist()
        for q in range(query.shape[1]):
            t = float(query[b, q])
            if t <= g[0]:
                p = 0.0
            elif t >= g[-1]:
                p = K1 - 1.0
            else:
                j = max(i for i in range(K1) if g[i] < t)
                p = j + (t - g[j]) / (g[j + 1] - g[j])
            if W == K1:
                idx, taper = list(range(K1)), [1.0] * K1
            elif W == 1:
                idx, taper = [min(range(K1), key=lambda i: abs(g[i] - t))], [1.0]
            else:
                start = min(max(math.floor(p - W / 2) + 1, 0), K1 - W)
                idx = list(range(start, start + W))
                taper = [math.cos(math.pi * (i - p) / W) ** 2 if abs(i - p) < W / 2 else 0.0
                         for i in idx]
            logits = torch.tensor([-(sharpness * (g[j] - t)) ** 2 for j in idx])
            if present is not None:
                logits -= 30.0 * torch.tensor([0.0 if present[b, j] else 1.0 for j in idx])
            w = torch.softmax(logits, 0) * torch.tensor(taper)
            w = w / w.sum()
            out[b, q] = (w[:, None] * contexts[b, idx]).sum(0)
    return out


def test_local_attention_matches_naive_definition():
    torch.manual_seed(0)
    B, K1, H = 3, 17, 5
    grid = torch.sort(torch.rand(B, K1), dim=-1).values
    contexts = torch.randn(B, K1, H)
    present = torch.rand(B, K1) > 0.3
    query = torch.rand(B, 6) * 1.4 - 0.2  # inside and outside the grid
    for window in (1, 4, 8, 40):
        att = LocalTimeAttention(window, init_sharpness=7.0)
        expected = naive_local_attention(grid, contexts, present, query, window, 7.0)
        assert torch.allclose(att(grid, contexts, present, query), expected, atol=1e-5)
        att.dense_max_points = 0  # the gathered-window path computes the same thing
        assert torch.allclose(att(grid, contexts, present, query), expected, atol=1e-5)


# torch's first forward-mode call compiles decompositions with the deprecated torch.jit.script
@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*is deprecated:DeprecationWarning")
def test_pooled_context_is_continuous_in_the_query_time():
    """Sliding windows must not jump: between neighbouring query times the pooled context moves
    by at most (its largest time derivative) x step, across every window shift of an irregular
    grid (a jump J would show as J / step; the derivative itself may kink at grid times)."""
    torch.manual_seed(2)
    grid = torch.sort(torch.rand(1, 30, dtype=torch.float64), dim=-1).values
    contexts = torch.randn(1, 30, 4, dtype=torch.float64)
    att = LocalTimeAttention(6, init_sharpness=5.0).double()
    query = torch.linspace(-0.1, 1.1, 24001, dtype=torch.float64).unsqueeze(0)
    pooled, rate = torch.func.jvp(lambda q: att(grid, contexts, None, q), (query,),
                                  (torch.ones_like(query),))
    step = float(query[0, 1] - query[0, 0])
    assert torch.isfinite(rate).all()
    assert pooled.diff(dim=1).abs().max() / step <= 1.01 * rate.abs().max()


def test_full_window_is_dense_softmax_attention():
    torch.manual_seed(1)
    B, K1, H = 2, 9, 4
    grid = torch.sort(torch.rand(B, K1), dim=-1).values
    contexts = torch.randn(B, K1, H)
    query = torch.rand(B, 5)
    att = LocalTimeAttention(K1, init_sharpness=3.0)
    logits = -(3.0 * (grid[:, None, :] - query[:, :, None])) ** 2
    dense = torch.softmax(logits, -1) @ contexts
    assert torch.allclose(att(grid, contexts, None, query), dense, atol=1e-6)


def test_attention_memory_is_linear_in_k():
    # The largest intermediate holds (B, Q, W, H) values: at K = 4096 a dense K x K x H
    # tensor would hold 4096 / W times more. Measured through the saved tensors of autograd.
    att = LocalTimeAttention(8)
    K1, H = 4096, 16
    grid = torch.linspace(0, 1, K1).unsqueeze(0)
    contexts = torch.randn(1, K1, H, requires_grad=True)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        att(grid, contexts, None, grid).sum().backward()
    assert K1 > att.dense_max_points
    assert max(sizes) <= K1 * 8 * H


def test_gru_encoder_shapes_and_mask_channel():
    enc = GRUEncoder(3, 8)
    x = torch.randn(2, 7, 3)
    mask = torch.ones(2, 7, 3, dtype=torch.bool)
    mask[0, 2] = False
    steps, summary = enc(x, torch.linspace(0, 1, 7), mask)
    assert steps.shape == (2, 7, 8) and summary.shape == (2, 8)
    x2 = x.clone()
    x2[0, 2] = 100.0  # unobserved values are not read
    steps2, _ = enc(x2, torch.linspace(0, 1, 7), mask)
    assert torch.equal(steps, steps2)
    assert torch.isfinite(steps).all()
