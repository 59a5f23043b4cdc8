"""The pairwise label loss: both orders of each pair in one batch, a Bradley-Terry loss on the debiased log-odds."""

import math
from collections import Counter

import pytest
import torch
from datasets import Dataset
from training_utils import SHORT_DIRECT_TEMPLATE, make_model, make_tokenizer, rule_rows, tiny_training_args

from trl_gram.training.losses import label_smoothing_loss, pairwise_label_loss
from trl_gram.training.pair_batches import PairedOrderSampler, PairOrderCollator
from trl_gram.training.trainer import GramRewardTrainer


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _args(tmp_path, **kw):
    settings = dict(per_device_train_batch_size=4, mode="direct", swap="both", label_loss="pairwise")
    return tiny_training_args(tmp_path, **{**settings, **kw})


def _bce(x, y, eps):  # smoothed 2-way loss of log-odds x for "the first is better", label y (0: first)
    p = 1 / (1 + math.exp(-x))
    target = 1 - eps / 2 if y == 0 else eps / 2
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_pairwise_loss_matches_hand_computation():
    # rows: pair 3 as given (label 0), pair 3 swapped (label 1), pair 5 swapped alone, pair 8 swapped then given.
    logits = torch.tensor([[2.0, 0.5], [1.0, 0.0], [0.3, 0.9], [0.0, 0.4], [1.5, 1.0]])
    targets = torch.tensor([0, 1, 0, 0, 1])
    codes = torch.tensor([6, 7, 11, 17, 16])
    eps, w = 0.1, 0.3
    per_row, stats = pairwise_label_loss(logits, targets, codes, eps, w)
    d = [a - b for a, b in logits.tolist()]
    s3, b3 = (d[0] - d[1]) / 2, (d[0] + d[1]) / 2
    s8, b8 = (d[4] - d[3]) / 2, (d[4] + d[3]) / 2  # pair 8: given order is row 4 (label 1), swapped row 3
    pair3 = _bce(s3, 0, eps) + w * b3**2
    pair8 = _bce(s8, 1, eps) + w * b8**2
    alone = label_smoothing_loss(logits[2:3], targets[2:3], eps, "none").item()
    assert per_row.tolist() == pytest.approx([pair3, pair3, alone, pair8, pair8], rel=1e-5)
    assert stats["pairs"].item() == 2
    assert stats["pair_correct"].item() == (s3 > 0) + (s8 < 0)
    assert stats["tilt"].item() == pytest.approx(b3 + b8, rel=1e-5)


def test_a_position_preference_moves_only_the_tilt_term():
    """Adding the same log-odds c to both orders of a pair (a preference for the first position) leaves the label
    term unchanged; the per-order loss, by contrast, changes."""
    logits = torch.tensor([[0.4, 0.1], [0.2, 0.6]])
    targets, codes = torch.tensor([0, 1]), torch.tensor([0, 1])
    shifted = logits + torch.tensor([[1.7, 0.0], [1.7, 0.0]])
    assert torch.allclose(
        pairwise_label_loss(logits, targets, codes, 0.1, 0.0)[0],
        pairwise_label_loss(shifted, targets, codes, 0.1, 0.0)[0],
    )
    assert not torch.allclose(
        label_smoothing_loss(logits, targets, 0.1, "none"), label_smoothing_loss(shifted, targets, 0.1, "none")
    )
    tilted = pairwise_label_loss(shifted, targets, codes, 0.1, 1.0)[0]
    assert (tilted > pairwise_label_loss(logits, targets, codes, 0.1, 1.0)[0]).all()


def test_pairwise_loss_gradient_flows_to_both_orders():
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    per_row, _ = pairwise_label_loss(logits, torch.tensor([0, 1]), torch.tensor([0, 1]), 0.0, 0.0)
    per_row.sum().backward()
    # d(loss)/d(s) = -(1 - sigmoid(0)) = -0.5 per row, two rows; s = (d_u - d_v) / 2.
    assert logits.grad[0].tolist() == pytest.approx([-0.5, 0.5])
    assert logits.grad[1].tolist() == pytest.approx([0.5, -0.5])


def test_pairwise_loss_rejects_inconsistent_rows():
    with pytest.raises(ValueError, match="opposite label targets"):
        pairwise_label_loss(torch.zeros(2, 2), torch.tensor([0, 0]), torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="one slot per example"):
        pairwise_label_loss(torch.zeros(3, 2), torch.tensor([0, 1, 0]), torch.tensor([4, 5]))


def test_sampler_keeps_pairs_together_and_reshuffles():
    codes = [2 * p + s for p in range(20) for s in (1, 0)]  # swapped order listed first in the dataset
    sampler = PairedOrderSampler(codes)
    torch.manual_seed(0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(40)) and len(sampler) == 40
    assert first != second
    for order in (first, second):
        for k in range(0, 40, 2):  # every batch of even size holds whole pairs, given order first
            a, b = codes[order[k]], codes[order[k + 1]]
            assert a // 2 == b // 2 and a % 2 == 0 and b % 2 == 1
    assert list(PairedOrderSampler(codes, shuffle=False)) == [i ^ 1 for i in range(40)]


def test_sampler_groups_pairs_by_length():
    codes = [2 * p + s for p in range(200) for s in (0, 1)]
    lengths = [(i // 2) % 37 for i in range(400)]
    order = list(PairedOrderSampler(codes, group_size=2, lengths=lengths))  # groups of 50 pairs
    pair_lengths = [lengths[i] for i in order[::2]]
    for g in range(0, 200, 50):
        group = pair_lengths[g : g + 50]
        assert group == sorted(group, reverse=True)
    assert pair_lengths != sorted(pair_lengths, reverse=True)


def test_sampler_rejects_a_missing_or_repeated_order():
    with pytest.raises(ValueError, match=r"lack one of their two orders \(first: pair 1\)"):
        PairedOrderSampler([0, 1, 2])
    with pytest.raises(ValueError, match="Example 1 repeats order 0 of pair 0"):
        PairedOrderSampler([0, 0, 1])


def test_collator_carries_pair_order():
    seen = []

    def base(examples):
        seen.append(examples)
        return {"input_ids": torch.tensor([ex["input_ids"] for ex in examples])}

    collator = PairOrderCollator(base)
    batch = collator([{"input_ids": [1, 2], "pair_order": 6}, {"input_ids": [3, 4], "pair_order": 7}])
    assert batch["pair_order"].tolist() == [6, 7]
    assert all("pair_order" not in ex for ex in seen[-1])
    assert "pair_order" not in collator([{"input_ids": [1, 2]}])


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(mode="reason"), "needs `mode='direct'`"),
        (dict(swap="random"), "swap='random'"),
        (dict(per_device_train_batch_size=3), "must be even, got 3"),
        (dict(packing=True), "packing"),
        (dict(train_sampling_strategy="batch_rebalance"), "batch_rebalance"),
        (dict(pairwise_tilt_weight=-1.0), "pairwise_tilt_weight"),
    ],
)
def test_config_rejects_what_pairwise_cannot_do(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _args(tmp_path, **kw)


def test_trainer_batches_hold_both_orders_of_each_pair(tok, tmp_path):
    args = _args(tmp_path, per_device_train_batch_size=6, train_sampling_strategy="group_by_length")
    trainer = GramRewardTrainer(
        make_model(tok),
        args,
        train_dataset=Dataset.from_list(rule_rows(30, seed=3)),
        processing_class=tok,
        template=SHORT_DIRECT_TEMPLATE,
    )
    assert trainer.data_stats["train"]["examples"] == 60 and trainer.data_stats["train"]["unpaired_dropped"] == 0
    seen = Counter()
    for batch in trainer.get_train_dataloader():
        codes = batch["pair_order"].tolist()
        assert len(codes) == 6
        assert Counter(c // 2 for c in codes) == Counter({c // 2: 2 for c in codes})
        slots = (batch["labels"] <= -1000).sum(dim=1)
        assert slots.tolist() == [1] * 6
        seen.update(c // 2 for c in codes)
    assert seen == Counter({p: 2 for p in range(30)})
