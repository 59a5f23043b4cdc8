"""PPO math: masked statistics, KL estimators, per-token rewards, GAE, clipped losses.

Pure tensor functions (no models, no distributed state), each checked against a hand computation in
`tests/test_ppo_core.py`. Every `[B, T]` tensor here is aligned on completion tokens, and `mask` marks the real tokens
of each completion (a prefix: the tokens up to and including the EOS, if any).
"""

from collections.abc import Callable

import torch

ReduceFn = Callable[[torch.Tensor], torch.Tensor]


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `x` where `mask` is 1."""
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is 1 (0 when the mask is empty)."""
    return masked_sum(x, mask, dim) / (mask.sum() if dim is None else mask.sum(dim)).clamp(min=1)


def masked_mean_var(
    x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True, reduce: ReduceFn | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of `x` over the masked positions (two passes in float64, so a large mean does not eat the
    variance).

    `reduce`, if given, sums a tensor over processes (e.g. `lambda t: accelerator.reduce(t, "sum")`), so that the
    statistics are those of the whole distributed batch.
    """
    reduce = reduce or (lambda t: t)
    x64, mask64 = x.double(), mask.double()
    total, count = reduce(torch.stack([(x64 * mask64).sum(), mask64.sum()])).unbind()
    count = count.clamp(min=1)
    mean = total / count
    var = reduce(((x64 - mean) ** 2 * mask64).sum()) / count
    if unbiased:
        var = var * count / (count - 1).clamp(min=1)
    return mean.to(x.dtype), var.to(x.dtype)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, reduce: ReduceFn | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """Standardize `x` with the statistics of its masked positions (the mean is added back if not `shift_mean`).

    Unmasked positions are set to 0.
    """
    mean, var = masked_mean_var(x, mask, reduce=reduce)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def combine_rewards(
    rewards_per_func: torch.Tensor,
    weights: torch.Tensor,
    has_eos: torch.Tensor | None = None,
    missing_eos_penalty=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence scores from `[B, F]` rewards (NaN where a function returned `None`).

    The score is the weighted sum of the non-NaN rewards (TRL's convention), minus `missing_eos_penalty` for rows
    whose `has_eos` is False. Returns `(scores, valid)`; `valid[b]` is False when no function scored row `b` (its
    score is then 0 and it should be left out of the update).
    """
    valid = ~torch.isnan(rewards_per_func).all(dim=1)
    scores = (rewards_per_func * weights.to(rewards_per_func).unsqueeze(0)).nansum(dim=1)
    if missing_eos_penalty is not None and has_eos is not None:
        scores = scores - missing_eos_penalty * (~has_eos.bool()).to(scores.dtype)
    return torch.where(valid, scores, torch.zeros_like(scores)), valid


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled from the policy.

    With `r = ref_logprobs - logprobs` (log of the reference/policy ratio):
    `"k1"`: `-r` (unbiased, can be negative); `"k2"`: `r**2 / 2` (biased, low variance); `"k3"`: `exp(r) - 1 - r`
    (unbiased and non-negative). See J. Schulman, "Approximating KL divergence" (2020).
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"`kl_estimator` must be one of 'k1', 'k2', 'k3', got {estimator!r}.")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: `-kl_coef * kl` on every token, plus the sequence score on the last real token.

    Args:
        scores: `[B]` sequence-level scores.
        kl: `[B, T]` per-token KL estimates.
        mask: `[B, T]` completion mask (a prefix of ones per row; rows may be all zero).
    """
    mask = mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask
    lengths = mask.sum(1).long()
    has_tokens = lengths > 0
    rows = torch.arange(len(scores), device=scores.device)[has_tokens]
    rewards[rows, lengths[has_tokens] - 1] += scores[has_tokens].to(rewards.dtype)
    return rewards


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over right-padded sequences.

    `delta_t = r_t + gamma * V_{t+1} - V_t` and `A_t = delta_t + gamma * lam * A_{t+1}`, where `V` and `A` beyond the
    last real token are 0 (the episode ends there). Returns `(advantages, returns)` with `returns = advantages +
    values`, both 0 on padding.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    batch, length = rewards.shape
    advantages = torch.zeros_like(values)
    last = torch.zeros(batch, dtype=values.dtype, device=values.device)
    for t in reversed(range(length)):
        next_mask = mask[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        last = delta + gamma * lam * last * next_mask
        advantages[:, t] = last
    advantages = advantages * mask
    returns = (advantages + values) * mask
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate: `mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))` over masked tokens.

    Returns the loss and detached statistics: `clipfrac` (share of tokens where the clipped term is the active one),
    `approx_kl` (`mean(0.5 * log_ratio**2)`, the k2 estimate of KL(old || new)) and `ratio` (mean ratio).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(logprobs.dtype), mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss `0.5 * mean(max((V - R)^2, (V_clip - R)^2))`, `V_clip = V_old + clip(V - V_old, +-c)`.

    With `cliprange_value=None` it is the plain `0.5 * mean((V - R)^2)`. Returns the loss and `{"clipfrac": ...}`.
    """
    unclipped = (values - returns) ** 2
    if cliprange_value is None:
        return 0.5 * masked_mean(unclipped, mask), {"clipfrac": torch.zeros((), device=values.device)}
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(values.dtype), mask)
    return loss, {"clipfrac": clipfrac}


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reduce: ReduceFn | None = None
) -> torch.Tensor:
    """`1 - Var(returns - values) / Var(returns)` over masked tokens (1: perfect critic, <= 0: useless)."""
    _, var_returns = masked_mean_var(returns, mask, reduce=reduce)
    _, var_residual = masked_mean_var(returns - values, mask, reduce=reduce)
    return 1.0 - var_residual / var_returns.clamp(min=1e-8)


class RunningMoments:
    """Running mean and standard deviation of scalar scores (Chan et al.'s parallel update), for reward scaling.

    `update` takes the (already process-reduced) sum, sum of squares and count of a new batch, so every process keeps
    the same statistics. `state_dict`/`load_state_dict` make it checkpointable.
    """

    def __init__(self):
        self.mean = 0.0
        self.var = 1.0
        self.count = 0.0

    @property
    def std(self) -> float:
        return self.var**0.5

    def update(self, total: float, total_sq: float, count: float) -> None:
        if count <= 0:
            return
        batch_mean = total / count
        batch_var = max(total_sq / count - batch_mean**2, 0.0)
        new_count = self.count + count
        delta = batch_mean - self.mean
        if self.count == 0:
            self.mean, self.var = batch_mean, batch_var
        else:
            m2 = self.var * self.count + batch_var * count + delta**2 * self.count * count / new_count
            self.mean = self.mean + delta * count / new_count
            self.var = m2 / new_count
        self.count = new_count

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])
