"""One-sided confidence bounds on rates and on differences of rates (used by :mod:`.certify`).

A *rate* is the mean mu = E X of n independent values X_i in [0, 1] (a selection indicator, an accuracy, a
win indicator with ties counted as 1/2). Every function is vectorised over numpy arrays and returns bounds
that each hold with probability >= 1 - delta, conditional on n. Three bound families (``bound=``):

- ``"clopper-pearson"`` (exact binomial; :func:`scipy.stats.beta` quantiles). For 0/1 values with k ones,
  U = Beta^{-1}(1 - delta; k + 1, n - k) and L = Beta^{-1}(delta; k, n - k + 1) (U = 1 at k = n, L = 0 at
  k = 0). Values strictly between 0 and 1 (ties) are treated conservatively: X <= 1[X > 0] and X >= 1[X = 1],
  so U uses k_hi = #{X_i > 0} and L uses k_lo = #{X_i = 1}; with no ties k_hi = k_lo = k and the bound is
  exact. The tightest valid bound for a binomial rate; the default.
- ``"bernstein"``: Bernstein's inequality with the variance bound Var X <= mu (1 - mu), which every [0, 1]
  variable satisfies, inverted in mu. With L = log(1/delta), mu is excluded when
  |mean - mu| > t(mu) = L/(3n) + sqrt((L/(3n))^2 + 2 mu (1 - mu) L / n); U and L are the ends of the
  remaining interval. Variance-adaptive (the margin is ~ sqrt(2 mu L / n) for small mu), uses ties as their
  value, and is valid for any values in [0, 1]. Maurer & Pontil's empirical Bernstein bound (which estimates
  the variance; :func:`empirical_bernstein_ucb`, kept for CF's clipped distances) pays 7L/(3(n - 1)) on top
  and is about 3x looser on rates of 50-100 members.
- ``"hoeffding"``: mean +/- sqrt(L / (2n)). Ignores the variance; loose for rates near 0 or 1.

A difference of two independent rates, d = w (mu_a - mu_o) (a group's rate against the rest of its anchor,
or two roles' accuracies), is bounded by combining the two rates' tests with Fisher's method. For the upper
bound, let P_a(mu) be the p-value of "mu_a is at least mu" (the level at which mu is the rate's upper bound)
and P_o the p-value of "mu_o is at most mu". Both are super-uniform and independent, so
-2 (log P_a + log P_o) is stochastically below chi^2 with 4 degrees of freedom, and the region
{log P_a + log P_o > -c}, c = chi2_4^{-1}(1 - delta) / 2, holds the true pair with probability >= 1 - delta.
Its largest difference is U_d = w max over l in [0, c] of (U_a(e^{-l}) - L_o(e^{-(c - l)})), U_a(alpha) / L_o(alpha)
the one-sided bounds at level 1 - alpha (L_d likewise); the maximum (of a unimodal function of l) is found
by a coarse grid and a golden-section search. Against splitting delta in
halves (U_a(delta/2) - L_o(delta/2)), Fisher's region is elliptical rather than rectangular: 20-30% tighter
for two cells of similar size, within a few % of it when one cell is much larger (docs/EVALUATION.md).
Hoeffding is instead applied to the difference directly, d_hat + w sqrt(L/2 (1/n_a + 1/n_o)) (one sum of
n_a + n_o independent terms), as before.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from faro_core.errors import FaroError

BOUNDS = ("clopper-pearson", "bernstein", "hoeffding")
DEFAULT_BOUND = "clopper-pearson"


def check_bound(bound: str) -> str:
    """The bound's canonical name (``clopper_pearson`` and ``cp`` are accepted); FaroError otherwise."""
    b = str(bound).strip().lower().replace("_", "-")
    b = {"cp": "clopper-pearson", "exact": "clopper-pearson", "binomial": "clopper-pearson"}.get(b, b)
    if b not in BOUNDS:
        raise FaroError(f"unknown bound {bound!r}; choose from {', '.join(BOUNDS)}")
    return b


def _arr(x: object) -> np.ndarray:
    return np.asarray(x, dtype=float)


def clopper_pearson(k_lo: object, k_hi: object, n: object, delta: object) -> tuple[np.ndarray, np.ndarray]:
    """(L, U): one-sided exact binomial bounds at level 1 - delta each; ``k_lo`` / ``k_hi`` counts (see module).

    Counts may be fractional (used to extrapolate to other sample sizes at a fixed rate)."""
    k_lo, k_hi, n = _arr(k_lo), _arr(k_hi), _arr(n)
    delta = _arr(delta)
    with np.errstate(invalid="ignore", divide="ignore"):
        up = np.where(k_hi >= n, 1.0, stats.beta.ppf(1.0 - delta, k_hi + 1.0, np.maximum(n - k_hi, 1e-300)))
        lo = np.where(k_lo <= 0, 0.0, stats.beta.ppf(delta, np.maximum(k_lo, 1e-300), n - k_lo + 1.0))
    return lo, up


def bernstein(mean: object, n: object, delta: object) -> tuple[np.ndarray, np.ndarray]:
    """(L, U): Bernstein bounds with Var X <= mu (1 - mu), inverted in mu (see module), level 1 - delta each.

    Solving mu - m = t(mu) for u = mu - m >= 0 gives (1 + a) u^2 - (2e + a (1 - 2m)) u - a m (1 - m) = 0 with
    a = 2L/n, e = L/(3n); U = m + (its positive root), and L by the symmetry X -> 1 - X."""
    m, n = np.clip(_arr(mean), 0.0, 1.0), _arr(n)
    lg = np.log(1.0 / _arr(delta))
    a, e = 2.0 * lg / n, lg / (3.0 * n)

    def up(mm: np.ndarray) -> np.ndarray:
        b = 2.0 * e + a * (1.0 - 2.0 * mm)
        u = (b + np.sqrt(b * b + 4.0 * (1.0 + a) * a * mm * (1.0 - mm))) / (2.0 * (1.0 + a))
        return np.minimum(mm + u, 1.0)

    return 1.0 - up(1.0 - m), up(m)


def hoeffding(mean: object, n: object, delta: object) -> tuple[np.ndarray, np.ndarray]:
    """(L, U) = mean -/+ sqrt(log(1/delta) / (2n)), clipped to [0, 1]."""
    m, n = _arr(mean), _arr(n)
    h = np.sqrt(np.log(1.0 / _arr(delta)) / (2.0 * n))
    return np.maximum(m - h, 0.0), np.minimum(m + h, 1.0)


def rate_upper(bound: str, mean: object, n: object, delta: object, k_hi: object | None = None) -> np.ndarray:
    """One-sided upper bound U of a rate at level 1 - delta with the named bound (``k_hi``: Clopper-Pearson's
    count of values above 0, ``mean * n`` by default)."""
    if bound == "clopper-pearson":
        k, n_, d = _arr(mean) * _arr(n) if k_hi is None else _arr(k_hi), _arr(n), _arr(delta)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(k >= n_, 1.0, stats.beta.ppf(1.0 - d, k + 1.0, np.maximum(n_ - k, 1e-300)))
    if bound == "bernstein":
        return bernstein(mean, n, delta)[1]
    return hoeffding(mean, n, delta)[1]


def rate_bounds(bound: str, mean: object, n: object, delta: object, k_lo: object | None = None,
                k_hi: object | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(L, U) of a rate with the named bound, each one-sided at level 1 - delta.

    ``mean`` is the sample mean of the n values; ``k_lo`` / ``k_hi`` (Clopper-Pearson only) the counts of
    values equal to 1 and above 0, both ``mean * n`` when the values are 0/1 (the default). The lower bound is
    the upper bound of 1 - X (all three bounds are symmetric)."""
    bound = check_bound(bound)
    n_lo = None if k_lo is None else _arr(n) - _arr(k_lo)
    return 1.0 - rate_upper(bound, 1.0 - _arr(mean), n, delta, n_lo), rate_upper(bound, mean, n, delta, k_hi)


FISHER_GRID = 9  # coarse points of the split l in [0, c]; then a golden-section search
FISHER_STEPS = 18  # golden-section steps: the bracket shrinks to 0.618^18 ~ 2e-4 of a grid cell


def _fisher_sup(g: Any, c: float, shape: tuple[int, ...]) -> np.ndarray:
    """sup over l in [0, c] of g(l) (vectorised: ``g`` maps l [..., K] to values [..., K], broadcast against
    ``shape``). g = A - B with A increasing concave-like and B increasing convex-like in l (a rate's bound as
    its level falls or rises), so g is unimodal: its best coarse point is bracketed by its neighbours and the
    bracket is narrowed by golden-section search."""
    grid = np.broadcast_to(np.linspace(0.0, c, FISHER_GRID), (*shape, FISHER_GRID))
    vals = g(grid)
    best = np.argmax(vals, axis=-1)
    h = c / (FISHER_GRID - 1)
    a, b = np.maximum(best - 1, 0) * h, np.minimum(best + 1, FISHER_GRID - 1) * h
    top = np.take_along_axis(vals, best[..., None], axis=-1)[..., 0]
    phi = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = b - phi * (b - a), a + phi * (b - a)
    f1, f2 = (v[..., 0] for v in np.split(g(np.stack([x1, x2], axis=-1)), 2, axis=-1))
    for _ in range(FISHER_STEPS):
        left = f1 >= f2  # the maximum lies in [a, x2]
        a, b = np.where(left, a, x1), np.where(left, x2, b)
        x_new = np.where(left, b - phi * (b - a), a + phi * (b - a))
        f_new = g(x_new[..., None])[..., 0]
        x1, f1, x2, f2 = (np.where(left, x_new, x2), np.where(left, f_new, f2),
                          np.where(left, x1, x_new), np.where(left, f1, f_new))
        top = np.maximum(top, f_new)
    return np.maximum(top, np.maximum(f1, f2))


def difference_upper(bound: str, mean_a: object, n_a: object, mean_o: object, n_o: object, delta: float,
                     weight: object = 1.0, k_a_hi: object | None = None,
                     k_o_lo: object | None = None) -> np.ndarray:
    """One-sided upper bound (level 1 - delta) of d = weight (mu_a - mu_o) for independent samples a and o.

    Clopper-Pearson and Bernstein: U_a and L_o combined by Fisher's method (see module); Hoeffding: on the
    difference directly. ``k_a_hi`` / ``k_o_lo``: Clopper-Pearson's counts of a's values above 0 and of o's
    values equal to 1 (default ``mean * n``). Inputs broadcast."""
    bound = check_bound(bound)
    w, ma, mo, na, no = np.broadcast_arrays(*(_arr(v) for v in (weight, mean_a, mean_o, n_a, n_o)))
    if bound == "hoeffding":
        return w * (ma - mo + np.sqrt(math.log(1.0 / delta) / 2.0 * (1.0 / na + 1.0 / no)))
    c = float(stats.chi2.isf(delta, 4)) / 2.0
    ka = None if k_a_hi is None else np.broadcast_to(_arr(k_a_hi), ma.shape)[..., None]
    # L_o(alpha) = 1 - U(1 - X_o)(alpha), with the counts of 1 - X_o above 0 = n_o - k_o_lo
    ko = None if k_o_lo is None else (no - np.broadcast_to(_arr(k_o_lo), mo.shape))[..., None]
    ma_, na_, mo_, no_ = ma[..., None], na[..., None], 1.0 - mo[..., None], no[..., None]

    def g(grid: np.ndarray) -> np.ndarray:  # U_a at level e^{-l} minus L_o at level e^{-(c - l)}
        return rate_upper(bound, ma_, na_, np.exp(-grid), ka) + rate_upper(bound, mo_, no_, np.exp(grid - c), ko) - 1.0

    return w * _fisher_sup(g, c, ma.shape)


def difference_bounds(bound: str, mean_a: object, n_a: object, mean_o: object, n_o: object, delta: float,
                      weight: object = 1.0, k_a: tuple[object, object] | None = None,
                      k_o: tuple[object, object] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(L, U) of d = weight (mu_a - mu_o), each one-sided at level 1 - delta (:func:`difference_upper`; L is
    minus the upper bound of weight (mu_o - mu_a)). ``k_a`` / ``k_o``: optional (k_lo, k_hi) counts."""
    (ka_lo, ka_hi), (ko_lo, ko_hi) = k_a or (None, None), k_o or (None, None)
    up = difference_upper(bound, mean_a, n_a, mean_o, n_o, delta, weight, ka_hi, ko_lo)
    lo = -difference_upper(bound, mean_o, n_o, mean_a, n_a, delta, weight, ko_hi, ka_lo)
    return lo, up


def empirical_bernstein_ucb(values: np.ndarray, bound: float, delta: float) -> float:
    """Empirical-Bernstein upper bound (Maurer & Pontil 2009, Thm 4) on E X for X in [0, bound]:
    B (mean + sqrt(2 V log(2/delta) / n) + 7 log(2/delta) / (3 (n - 1))), V the sample variance of X / B."""
    x = np.clip(np.asarray(values, dtype=float), 0.0, bound) / bound
    n = len(x)
    if n < 2:
        return math.inf
    var = float(np.var(x, ddof=1))
    lg = math.log(2.0 / delta)
    return bound * (float(x.mean()) + math.sqrt(2.0 * var * lg / n) + 7.0 * lg / (3.0 * (n - 1)))


def scales_to_reach(upper_at: Any, target: object, empirical: object, guesses: int = 5,
                    bisections: int = 10) -> np.ndarray:
    """Per row, the smallest factor s by which every count must grow (rates fixed) for the upper bound to
    reach ``target`` (inf where ``empirical >= target``). ``upper_at(s)`` maps factors [R] to the rows' upper
    bounds [R], decreasing in s. A margin shrinks about as s^(-1/2), so a guess iterates
    s <- s (margin(s) / (target - empirical))^2; the guess is bracketed by factors of 2 and bisected on log s
    (to within 2^(1/2^10) - 1 < 0.07%)."""
    target, emp = (np.asarray(v, dtype=float).reshape(-1) for v in np.broadcast_arrays(_arr(target),
                                                                                         _arr(empirical)))
    gap = target - emp
    need = gap > 0
    s = np.ones(target.shape)
    if not need.any():
        return np.full(target.shape, np.inf)
    gap_safe = np.where(need, gap, 1.0)

    def fails(x: np.ndarray) -> np.ndarray:
        return np.asarray(upper_at(x), dtype=float).reshape(-1) > target + 1e-12

    for _ in range(guesses):
        margin = np.asarray(upper_at(s), dtype=float).reshape(-1) - emp
        s = np.where(need, np.clip(s * (np.maximum(margin, 1e-12) / gap_safe) ** 2, 1e-6, 1e9), 1.0)
    hi, lo = s.copy(), s.copy()
    for _ in range(60):  # hi: a passing factor
        bad = need & fails(hi)
        if not bad.any():
            break
        hi = np.where(bad, hi * 2.0, hi)
        lo = np.where(bad, hi / 2.0, lo)
    lo = np.where(lo == hi, hi / 2.0, lo)
    for _ in range(60):  # lo: a failing factor (or the floor)
        ok = need & ~fails(lo) & (lo > 1e-6)
        if not ok.any():
            break
        hi, lo = np.where(ok, lo, hi), np.where(ok, lo / 2.0, lo)
    for _ in range(bisections):
        mid = np.sqrt(lo * hi)
        bad = fails(mid)
        lo, hi = np.where(bad, mid, lo), np.where(bad, hi, mid)
    return np.where(need, hi, np.inf)
