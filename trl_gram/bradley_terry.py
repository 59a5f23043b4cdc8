"""Bradley–Terry scores of a group from soft pairwise outcomes.

Each member ``k`` of a group gets a strength ``s_k``; the model says ``P(a beats b) = sigmoid(s_a - s_b)``. Given the
judge's win probabilities ``p`` on some pairs (any connected schedule, soft outcomes, optional weights), [`fit`]
maximizes

    sum_pairs w [p log sigmoid(s_a - s_b) + (1 - p) log sigmoid(s_b - s_a)]  -  prior / 2 * sum_k s_k^2

by Newton's method. The Gaussian prior keeps the fit finite when a member won or lost everything and pulls a group of
near-ties towards 0 (every member's expected win probability near 0.5). The objective is strictly concave, so the
solution is unique.

[`expected_wins`] turns strengths into each member's expected win probability against the rest of the group, the
``prob`` scale of the rewards. On all pairs with equal weights it orders the group exactly as the mean win
probability does: at the optimum ``mean_b p_ab = mean_b sigmoid(s_a - s_b) + prior s_a / (G - 1)``, and both terms
increase with ``s_a``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PRIOR = 0.1


def fit(
    n: int,
    pairs: Sequence[tuple[int, int, float]],
    weights: Sequence[float] | None = None,
    prior: float = PRIOR,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> np.ndarray:
    """Strengths of ``n`` members from outcomes ``(a, b, P(a beats b))``.

    Args:
        n (`int`): Members.
        pairs (`list[tuple[int, int, float]]`): Observed win probabilities, ``0 <= p <= 1``; a pair may repeat.
        weights (`list[float]`, *optional*): Weight of each outcome (default 1).
        prior (`float`): Precision of the Gaussian prior on each strength (``> 0``).
        tol (`float`): Stop when the largest Newton step is below this.
        max_iter (`int`): Most Newton steps.
    """
    if prior <= 0:
        raise ValueError(f"`prior` must be positive (it keeps the fit finite), got {prior}.")
    s = np.zeros(n)
    if n == 0 or not pairs:
        return s
    a = np.array([p[0] for p in pairs], dtype=int)
    b = np.array([p[1] for p in pairs], dtype=int)
    y = np.array([p[2] for p in pairs], dtype=float)
    if np.any((a < 0) | (a >= n) | (b < 0) | (b >= n)):
        raise ValueError(f"An outcome names a member outside 0..{n - 1}.")
    if np.any(a == b):
        raise ValueError("An outcome compares a member with itself.")
    if np.any(~np.isfinite(y) | (y < 0) | (y > 1)):
        raise ValueError("Win probabilities must be finite and within [0, 1].")
    w = np.ones(len(pairs)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(pairs):
        raise ValueError(f"`weights` has {len(w)} values for {len(pairs)} outcomes.")
    for _ in range(max_iter):
        q = 1.0 / (1.0 + np.exp(-(s[a] - s[b])))
        r = w * (y - q)  # d(log-likelihood)/d(s_a - s_b)
        grad = -prior * s
        np.add.at(grad, a, r)
        np.add.at(grad, b, -r)
        h = w * q * (1 - q)
        hess = prior * np.eye(n)  # minus the Hessian: a weighted graph Laplacian plus the prior
        np.add.at(hess, (a, a), h)
        np.add.at(hess, (b, b), h)
        np.add.at(hess, (a, b), -h)
        np.add.at(hess, (b, a), -h)
        step = np.linalg.solve(hess, grad)
        s = s + step
        if np.max(np.abs(step)) < tol:
            break
    return s


def expected_wins(strengths: Sequence[float], members: Sequence[int] | None = None) -> np.ndarray:
    """Each member's mean ``sigmoid(s_k - s_m)`` over the other members ``m`` (0.5 for a group of one).

    Args:
        strengths: From [`fit`].
        members (`Sequence[int]`, *optional*): The members that count as "the group" (default: all).
    """
    s = np.asarray(strengths, dtype=float)
    idx = np.arange(len(s)) if members is None else np.asarray(list(members), dtype=int)
    out = np.full(len(s), np.nan)
    if len(idx) == 1:
        out[idx] = 0.5
        return out
    sub = s[idx]
    win = 1.0 / (1.0 + np.exp(-(sub[:, None] - sub[None, :])))
    np.fill_diagonal(win, 0.0)
    out[idx] = win.sum(axis=1) / (len(idx) - 1)
    return out
