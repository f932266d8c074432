"""High-precision covariance kernels of the base processes (mpmath), written from the
processes' definitions as Gaussian processes, not from their state-space transitions."""

import mpmath

mpmath.mp.dps = 50


def matern(nu, lengthscale, scale):
    lam = mpmath.sqrt(2 * mpmath.mpf(nu)) / mpmath.mpf(lengthscale)

    def k(s, t):
        x = lam * abs(s - t)
        poly = {0.5: 1, 1.5: 1 + x, 2.5: 1 + x + x**2 / 3}[nu]
        return mpmath.mpf(scale) ** 2 * poly * mpmath.exp(-x)

    return k


def oscillator(frequency, damping, scales):
    """Sum over harmonics h of sigma_h^2 e^{-gamma r} cos(2 pi h f r)."""
    def k(s, t):
        r = abs(s - t)
        return sum(mpmath.mpf(sig) ** 2 * mpmath.exp(-mpmath.mpf(damping) * r)
                   * mpmath.cos(2 * mpmath.pi * (h + 1) * mpmath.mpf(frequency) * r)
                   for h, sig in enumerate(scales))

    return k


def local_linear_trend(level_scale, slope_scale, init_level, init_slope, t0):
    """Level l0 + v0 (t - t0) + sigma_l W_1 + sigma_v int W_2, from t0 with l0 ~ N(0, init_level^2),
    v0 ~ N(0, init_slope^2)."""
    def k(s, t):
        a, b = s - t0, t - t0
        m = min(a, b)
        integrated = m**3 / 3 + abs(a - b) * m**2 / 2  # Cov(int_0^a W, int_0^b W)
        return (mpmath.mpf(init_level) ** 2 + mpmath.mpf(init_slope) ** 2 * a * b
                + mpmath.mpf(level_scale) ** 2 * m + mpmath.mpf(slope_scale) ** 2 * integrated)

    return k


def total(*kernels):
    return lambda s, t: sum(k(s, t) for k in kernels)


def gaussian_log_density(kernel, times, values):
    """log N(values; 0, [kernel(t_i, t_j)]) in high precision."""
    n = len(times)
    t = [mpmath.mpf(x) for x in times]
    C = mpmath.matrix(n, n)
    for i in range(n):
        for j in range(n):
            C[i, j] = kernel(t[i], t[j])
    L = mpmath.cholesky(C)
    v = mpmath.lu_solve(L, mpmath.matrix([mpmath.mpf(x) for x in values]))
    return (-sum(v[i] ** 2 for i in range(n)) / 2 - sum(mpmath.log(L[i, i]) for i in range(n))
            - n * mpmath.log(2 * mpmath.pi) / 2)


def conditional_path_log_density(kernel, times, values):
    """log p(y_1..K | y_0) of a zero-mean Gaussian process, by dense conditioning."""
    return float(gaussian_log_density(kernel, times, values)
                 - gaussian_log_density(kernel, times[:1], values[:1]))


def van_loan(drift, diffusion, dt):
    """(A, Q) from F and L L^T by Van Loan's block exponential in high precision."""
    S = len(drift)
    M = mpmath.matrix(2 * S, 2 * S)
    for i in range(S):
        for j in range(S):
            M[i, j] = -mpmath.mpf(drift[i][j]) * dt
            M[S + i, S + j] = mpmath.mpf(drift[j][i]) * dt
            M[i, S + j] = mpmath.mpf(diffusion[i][j]) * dt
    E = mpmath.expm(M)
    A = E[S:, S:].T
    return A, A * E[:S, S:]
