"""The pairwise label loss: both orders of each pair in one batch, a Bradley-Terry loss on the debiased log-odds."""

import math
from collections import Counter

import pytest
import torch
from datasets import Dataset
from training_utils import (
    SHORT_DIRECT_TEMPLATE,
    make_model,
    make_tokenizer,
    reason_trainer,
    rule_rows,
    tiny_training_args,
)

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
        (dict(mode="pretrain"), "needs `mode` 'direct' or 'reason'"),
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


# ---------------------------------------------------------------------------------------------------------------------
# Reason-mode training with paired direct examples (`direct_label_loss="pairwise"`)
# ---------------------------------------------------------------------------------------------------------------------


def _batches(order, size):
    return [order[k : k + size] for k in range(0, len(order), size)]


def test_sampler_places_single_examples_so_no_pair_straddles_a_batch():
    # 15 singles (reasoning examples, code -1) interleaved with 12 pairs, as a concatenated dataset holds them.
    codes = [-1] * 15 + [2 * p + s for p in range(12) for s in (0, 1)]
    sampler = PairedOrderSampler(codes, batch_size=4)
    torch.manual_seed(1)
    orders = [list(sampler) for _ in range(3)]
    assert len(sampler) == 39 and orders[0] != orders[1]
    for order in orders:
        assert sorted(order) == list(range(39))
        for batch in _batches(order, 4):
            pairs = Counter(codes[i] // 2 for i in batch if codes[i] >= 0)
            assert all(n == 2 for n in pairs.values()), batch  # a pair is never split between two batches
    with pytest.raises(ValueError, match="even `batch_size`, got None"):
        PairedOrderSampler(codes)


def test_aligned_moves_a_pair_only_until_a_single_fills_the_gap():
    from trl_gram.training.pair_batches import aligned

    units = [[0], [1, 2], [3, 4], [5], [6]]
    # batch size 2: the pair after the first single waits for the next single, the second pair follows it
    assert aligned(units, 2) == [[0], [5], [1, 2], [3, 4], [6]]
    assert aligned(units, 4) == [[0], [1, 2], [5], [3, 4], [6]]
    assert aligned([[0], [1, 2]], 2) == [[0], [1, 2]]  # nothing left to fill the gap: the last pair straddles


def test_pairwise_loss_leaves_rows_outside_any_pair_with_their_own_loss():
    logits = torch.tensor([[2.0, 0.5], [0.2, 0.1], [1.0, 0.0], [0.3, 0.9]])
    targets = torch.tensor([0, 1, 1, 0])
    codes = torch.tensor([6, -1, 7, -1])
    per_row, stats = pairwise_label_loss(logits, targets, codes, 0.1, 0.0)
    own = label_smoothing_loss(logits, targets, 0.1, "none")
    assert torch.allclose(per_row[[1, 3]], own[[1, 3]])
    s = ((2.0 - 0.5) - (1.0 - 0.0)) / 2
    assert math.isclose(per_row[0].item(), _bce(s, 0, 0.1), rel_tol=1e-5) and per_row[0] == per_row[2]
    assert stats["pairs"].item() == 1


def _reason_args(tmp_path, **kw):
    settings = dict(
        per_device_train_batch_size=4,
        mode="reason",
        direct_examples=True,
        direct_swap="both",
        label_loss="label_smoothing",
        direct_label_loss="pairwise",
        max_length=1024,
    )
    return tiny_training_args(tmp_path, **{**settings, **kw})


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(direct_swap="random"), "set `direct_swap='both'`"),
        (dict(label_loss="nll"), "`label_loss` 'label_smoothing' or 'pairwise', got 'nll'"),
        (dict(label_loss="pairwise", direct_label_loss=None, swap="random"), "swap='random'"),
        (dict(direct_examples=False, direct_swap=None), "set `direct_examples=True`"),
        (dict(per_device_train_batch_size=5), "`direct_label_loss='pairwise'` keeps both orders"),
        (dict(direct_label_loss="hinge"), "`direct_label_loss` must be"),
    ],
)
def test_config_rejects_what_direct_pairwise_cannot_do(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _reason_args(tmp_path, **kw)


def _check_label_tokens_in_lm(trainer, batch, is_direct, monkeypatch):
    """The next-token labels `compute_loss` hands to `SFTTrainer.compute_loss` for ``batch``: a direct example's
    label token is out (trained by the pairwise term alone), a reasoning example's is in (it must be generated)."""
    from trl import SFTTrainer

    from trl_gram.training.losses import is_slot

    seen = []
    parent = SFTTrainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):
        seen.append(inputs["labels"].clone())
        return parent(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "compute_loss", spy)
    slots = is_slot(batch["labels"])
    trainer.compute_loss(trainer.model, {k: v.clone() for k, v in batch.items()})
    for row, code in enumerate(batch["pair_order"].tolist()):
        at_slot = seen[-1][row][slots[row]]
        if is_direct(code):
            assert at_slot.tolist() == [-100]
        else:
            assert at_slot.item() in trainer.label_token_ids


def test_reason_training_with_paired_direct_examples(tok, tmp_path, monkeypatch):
    rows = rule_rows(10, seed=5, with_rationale=True)
    trainer = reason_trainer(tok, _reason_args(tmp_path, max_steps=3, logging_steps=1), rows)
    stats = trainer.data_stats["train"]
    assert stats["examples"] == 10 and stats["direct_examples"] == 20 and stats["direct_unpaired_dropped"] == 0
    codes = trainer.train_dataset["pair_order"]
    assert Counter(c for c in codes if c < 0) == Counter({-1: 10})
    batches = list(trainer.get_train_dataloader())
    assert sum(len(b["pair_order"]) for b in batches) == 30
    for batch in batches:
        order = batch["pair_order"].tolist()
        paired = Counter(c // 2 for c in order if c >= 0)
        assert all(n == 2 for n in paired.values())
        for row, code in enumerate(order):  # a reasoning example carries its rationale, a direct one the label alone
            supervised = int((batch["labels"][row] != -100).sum())
            assert (supervised == 1) == (code >= 0)

    mixed = next(b for b in batches if (b["pair_order"] < 0).any() and (b["pair_order"] >= 0).any())
    _check_label_tokens_in_lm(trainer, mixed, is_direct=lambda code: code >= 0, monkeypatch=monkeypatch)

    trainer.train()
    logged = [h for h in trainer.state.log_history if "pair_accuracy" in h]
    assert logged and all(math.isfinite(h["loss"]) for h in logged)


def test_reason_training_with_both_kinds_paired(tok, tmp_path, monkeypatch):
    """`label_loss="pairwise"` in reason mode: the reasoning examples come in both orders too, each kind's pairs whole
    in every batch; the reasoning examples keep their label token in the next-token loss, the direct ones do not."""
    rows = rule_rows(8, seed=6, with_rationale=True)
    args = _reason_args(tmp_path, swap="both", label_loss="pairwise", direct_label_loss=None, max_steps=2)
    assert args.direct_loss == "pairwise"
    trainer = reason_trainer(tok, args, rows)
    codes = trainer.train_dataset["pair_order"]
    assert len(codes) == 32 and sorted(codes) == list(range(32))  # 8 reasoning pairs, then 8 direct pairs
    batches = list(trainer.get_train_dataloader())
    for batch in batches:
        order = batch["pair_order"].tolist()
        assert all(n == 2 for n in Counter(c // 2 for c in order).values())
        for row, code in enumerate(order):
            supervised = int((batch["labels"][row] != -100).sum())
            assert (supervised == 1) == (code >= 16)  # codes 0..15: reasoning examples, with their rationale
    mixed = next(b for b in batches if (b["pair_order"] < 16).any() and (b["pair_order"] >= 16).any())
    _check_label_tokens_in_lm(trainer, mixed, is_direct=lambda code: code >= 16, monkeypatch=monkeypatch)
    trainer.train()
    assert any("pair_accuracy" in h for h in trainer.state.log_history)
