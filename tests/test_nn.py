
import torch

from pyro_vpf.nn import GRUEncoder, LocalTimeAttention


def naive_local_attention(grid, contexts, present, query, window, sharpness):
    """Per query: the `window` nearest grid points by position, softmax of the kernel."""
    B, K1, H = contexts.shape
    out = torch.empty(B, query.shape[1], H)
    W = min(window, K1)
    for b in range(B):
        for q in range(query.shape[1]):
            pos = int((grid[b] < query[b, q]).sum())  # insertion index (searchsorted, left)
            start = min(max(pos - W // 2, 0), K1 - W)
            idx = list(range(start, start + W))
            logits = torch.tensor([-(sharpness * (grid[b, j] - query[b, q])) ** 2 for j in idx])
            if present is not None:
                logits -= 30.0 * torch.tensor([0.0 if present[b, j] else 1.0 for j in idx])
            w = torch.softmax(logits, 0)
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
