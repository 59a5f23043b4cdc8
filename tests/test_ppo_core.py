"""PPO math against hand computations: GAE/returns, whitening, KL estimators, clipped losses, rewards, masks."""

import math

import pytest
import torch

from trl_gram.ppo import core
from trl_gram.ppo.config import GramPPOConfig
from trl_gram.ppo.rollout import completion_mask


def test_gae_matches_hand_computation():
    # Row 0 ends after 2 tokens (the 3rd position is padding with garbage values that must be ignored).
    rewards = torch.tensor([[0.5, 1.0, 7.0], [0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.4, 9.0], [0.1, 0.3, 0.6]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv, ret = core.compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # Row 0: delta1 = 1.0 - 0.4 = 0.6 ; delta0 = 0.5 + 0.9*0.4 - 0.2 = 0.66 ; A0 = 0.66 + 0.72*0.6 = 1.092
    # Row 1: delta2 = 1 - 0.6 = 0.4 ; delta1 = 0 + 0.9*0.6 - 0.3 = 0.24 ; delta0 = 0 + 0.9*0.3 - 0.1 = 0.17
    #        A2 = 0.4 ; A1 = 0.24 + 0.72*0.4 = 0.528 ; A0 = 0.17 + 0.72*0.528 = 0.55016
    expected_adv = torch.tensor([[1.092, 0.6, 0.0], [0.55016, 0.528, 0.4]])
    torch.testing.assert_close(adv, expected_adv)
    torch.testing.assert_close(ret, torch.tensor([[1.292, 1.0, 0.0], [0.65016, 0.828, 1.0]]))


def test_gae_with_gamma_lam_one_is_monte_carlo():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    adv, ret = core.compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    for b in range(3):
        n = int(mask[b].sum())
        for t in range(n):
            togo = rewards[b, t:n].sum()
            assert math.isclose(ret[b, t].item(), togo.item(), rel_tol=1e-5, abs_tol=1e-5)
            assert math.isclose(adv[b, t].item(), (togo - values[b, t]).item(), rel_tol=1e-5, abs_tol=1e-5)
        assert (adv[b, n:] == 0).all() and (ret[b, n:] == 0).all()


def test_gae_lambda_zero_is_one_step_td():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.25, 0.125]])
    adv, _ = core.compute_gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=0.0)
    torch.testing.assert_close(adv, torch.tensor([[1.0 + 0.125 - 0.5, 2.0 + 0.0625 - 0.25, 3.0 - 0.125]]))


def test_masked_whiten_and_distributed_statistics():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    w = core.masked_whiten(x, mask)
    real = w[mask.bool()]
    assert abs(real.mean().item()) < 1e-6
    assert math.isclose(real.std().item(), 1.0, rel_tol=1e-4)
    assert w[0, 2] == 0
    # shift_mean=False keeps the mean
    kept = core.masked_whiten(x, mask, shift_mean=False)[mask.bool()]
    assert math.isclose(kept.mean().item(), 3.0, rel_tol=1e-5)
    # With `reduce`, the statistics are those of all processes: simulate a second process holding `other`
    other = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)

    class SumWithOtherProcess:
        mean = None

        def __call__(self, t):
            if t.numel() == 2:  # first pass: (sum, count)
                out = t + torch.stack([other.sum(), torch.tensor(3.0, dtype=torch.float64)])
                self.mean = out[0] / out[1]
                return out
            return t + ((other - self.mean) ** 2).sum()  # second pass: squared deviations from the global mean

    mean, var = core.masked_mean_var(x, mask, reduce=SumWithOtherProcess())
    everything = torch.cat([x[mask.bool()].double(), other])
    assert math.isclose(mean.item(), everything.mean().item(), rel_tol=1e-6)
    assert math.isclose(var.item(), everything.var().item(), rel_tol=1e-6)


def test_variance_survives_a_large_mean():
    x = torch.tensor([[1000.0, 1000.01, 1000.02, 1000.03]])
    _, var = core.masked_mean_var(x, torch.ones(1, 4))
    assert math.isclose(var.item(), torch.tensor([0.0, 0.01, 0.02, 0.03]).var().item(), rel_tol=1e-2)


def test_kl_estimators_hand_values():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert math.isclose(core.kl_penalty(logp, ref, "k1").item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(core.kl_penalty(logp, ref, "k2").item(), 0.5 * math.log(2) ** 2, rel_tol=1e-6)
    assert math.isclose(core.kl_penalty(logp, ref, "k3").item(), 0.5 - 1 + math.log(2), rel_tol=1e-6)
    with pytest.raises(ValueError, match="kl_estimator"):
        core.kl_penalty(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_kl_estimates():
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    exact = (p * (p / q).log()).sum().item()
    gen = torch.Generator().manual_seed(0)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    logp, logq = p.log()[samples], q.log()[samples]
    for estimator in ("k1", "k3"):
        assert abs(core.kl_penalty(logp, logq, estimator).mean().item() - exact) < 0.01
    assert (core.kl_penalty(logp, logq, "k3") >= 0).all()


def test_policy_loss_clipping_and_gradients():
    old = torch.zeros(1, 2)
    logp = torch.full((1, 2), math.log(1.5), requires_grad=True)
    adv = torch.tensor([[1.0, -1.0]])
    loss, stats = core.policy_loss(logp, old, adv, torch.ones(1, 2), cliprange=0.2)
    # token 0 (A > 0, ratio 1.5 > 1.2): clipped term -1.2 is active ; token 1 (A < 0): unclipped term 1.5 is active
    assert math.isclose(loss.item(), (-1.2 + 1.5) / 2, rel_tol=1e-6)
    assert math.isclose(stats["clipfrac"].item(), 0.5)
    assert math.isclose(stats["ratio"].item(), 1.5, rel_tol=1e-6)
    loss.backward()
    assert logp.grad[0, 0] == 0  # clipped: no gradient
    assert math.isclose(logp.grad[0, 1].item(), 0.5 * 1.5, rel_tol=1e-6)  # d(-A*ratio)/dlogp / 2 tokens


def test_policy_loss_ignores_masked_tokens_and_pushes_up_positive_advantage():
    logp = torch.zeros(1, 3, requires_grad=True)
    loss, _ = core.policy_loss(
        logp, torch.zeros(1, 3), torch.tensor([[2.0, -1.0, 50.0]]), torch.tensor([[1, 1, 0]]), 0.2
    )
    assert math.isclose(loss.item(), (-2.0 + 1.0) / 2)
    loss.backward()
    assert logp.grad[0, 0] < 0 < logp.grad[0, 1]  # descent raises log-prob of the positive-advantage token
    assert logp.grad[0, 2] == 0


def test_value_loss_clipped_and_unclipped():
    values, old, ret = torch.tensor([[1.0, 0.1]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    loss, stats = core.value_loss(values, old, ret, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: unclipped 0, clipped (0.2 - 1)^2 = 0.64 ; token 1: both 0.01
    assert math.isclose(loss.item(), 0.5 * (0.64 + 0.01) / 2, rel_tol=1e-6)
    assert math.isclose(stats["clipfrac"].item(), 0.5)
    plain, _ = core.value_loss(values, old, ret, torch.ones(1, 2), cliprange_value=None)
    assert math.isclose(plain.item(), 0.5 * (0.0 + 0.01) / 2, rel_tol=1e-6)


def test_token_rewards_put_score_on_last_token():
    scores = torch.tensor([2.0, 3.0, 5.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.1, 0.1, 0.1], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    rewards = core.token_rewards(scores, kl, mask, kl_coef=0.5)
    expected = torch.tensor([[-0.05, -0.1 + 2.0, 0.0], [-0.05, -0.05, -0.05 + 3.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(rewards, expected)


def test_combine_rewards_weights_none_and_eos_penalty():
    nan = float("nan")
    per_func = torch.tensor([[1.0, nan], [nan, nan], [0.5, 2.0]])
    scores, valid = core.combine_rewards(per_func, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, 4.5]))
    assert valid.tolist() == [True, False, True]
    scores, _ = core.combine_rewards(per_func, torch.tensor([1.0, 2.0]), torch.tensor([False, True, True]), 1.0)
    torch.testing.assert_close(scores, torch.tensor([0.0, 0.0, 4.5]))


def test_explained_variance():
    ret = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert math.isclose(core.explained_variance(ret, ret, mask).item(), 1.0)
    assert core.explained_variance(torch.zeros(1, 4) + 2.5, ret, mask).item() < 1e-6


def test_running_moments_match_concatenation():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0])
    rm = core.RunningMoments()
    for x in (a, b):
        rm.update(x.sum().item(), (x**2).sum().item(), len(x))
    both = torch.cat([a, b])
    assert math.isclose(rm.mean, both.mean().item(), rel_tol=1e-6)
    assert math.isclose(rm.var, both.var(unbiased=False).item(), rel_tol=1e-6)
    restored = core.RunningMoments()
    restored.load_state_dict(rm.state_dict())
    assert restored.state_dict() == rm.state_dict()


def test_completion_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [3, 4, 9, 1]])
    mask, has_eos = completion_mask(ids, [2, 9])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]]
    assert has_eos.tolist() == [True, False, True]


@pytest.mark.parametrize(
    "field, value",
    [
        ("kl_estimator", "k4"),
        ("reward_normalization", "zscore"),
        ("num_ppo_epochs", 0),
        ("temperature", 0.0),
        ("cliprange", -0.1),
        ("max_completion_length", 0),
    ],
)
def test_config_rejects_bad_values(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        GramPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **{field: value})


def test_config_batch_arithmetic(tmp_path):
    cfg = GramPPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        num_mini_batches=4,
        num_ppo_epochs=5,
    )
    assert cfg.rollout_batch_size == 24
    assert cfg.steps_per_rollout == 20
    assert cfg.bf16 is False  # auto: off on CPU
