"""The label-smoothing loss, label-slot markers, and which tokens carry loss in each mode."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from training_utils import (
    SHORT_DIRECT_TEMPLATE,
    SHORT_REASON_TEMPLATE,
    make_model,
    make_tokenizer,
    rule_rows,
    tiny_training_args,
)

from trl_gram.parsing import format_verdict
from trl_gram.training.losses import (
    LABEL_SLOT_BASE,
    is_slot,
    label_smoothing_loss,
    slot_marker,
    split_label_slots,
)
from trl_gram.training.trainer import GramRewardTrainer


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _args(tmp_path, **kw):
    return tiny_training_args(tmp_path, **{"per_device_train_batch_size": 4, **kw})


def test_label_smoothing_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.5], [-1.0, -1.0]])
    targets = torch.tensor([0, 1, 1])
    eps = 0.1
    expected = []
    for (a, b), y in zip(logits.tolist(), targets.tolist()):
        z = math.log(math.exp(a) + math.exp(b))
        logp = [a - z, b - z]
        # smoothed target: 1 - eps/2 on y, eps/2 on the other word
        expected.append(-((1 - eps / 2) * logp[y] + (eps / 2) * logp[1 - y]))
    got = label_smoothing_loss(logits, targets, eps, reduction="none")
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)
    assert math.isclose(label_smoothing_loss(logits, targets, eps).item(), sum(expected) / 3, rel_tol=1e-6)
    # Same as torch's cross-entropy with label smoothing over the two classes.
    ref = F.cross_entropy(logits, targets, label_smoothing=eps)
    assert torch.allclose(label_smoothing_loss(logits, targets, eps), ref, atol=1e-6)
    # eps = 0 is the plain 2-way cross-entropy: for logits (2, 0), target 0 -> log(1 + e^-2).
    assert math.isclose(
        label_smoothing_loss(logits[:1], targets[:1], 0.0).item(), math.log(1 + math.exp(-2)), rel_tol=1e-6
    )


def test_label_smoothing_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        label_smoothing_loss(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="epsilon"):
        label_smoothing_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), epsilon=1.0)


def test_slot_markers_round_trip():
    labels = torch.tensor([[-100, 5, slot_marker(1), 7], [-100, -100, slot_marker(0), -100]])
    assert is_slot(labels).tolist() == [[False, False, True, False], [False, False, True, False]]
    lm, mask, targets = split_label_slots(labels, (40, 41), keep_in_lm=True)
    assert lm.tolist() == [[-100, 5, 41, 7], [-100, -100, 40, -100]]
    assert targets.tolist() == [1, 0]
    lm, _, _ = split_label_slots(labels, (40, 41), keep_in_lm=False)
    assert lm.tolist() == [[-100, 5, -100, 7], [-100, -100, -100, -100]]
    assert slot_marker(0) == LABEL_SLOT_BASE
    with pytest.raises(ValueError):
        slot_marker(2)


def test_reason_mode_masks_prompt_only(tok, tmp_path):
    rows = rule_rows(6, seed=0, with_rationale=True)
    trainer = GramRewardTrainer(
        make_model(tok),
        _args(tmp_path, mode="reason"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        template=SHORT_REASON_TEMPLATE,
    )
    rendered = trainer.rendered_train_dataset
    a_id, b_id = trainer.label_token_ids
    for ex, shown in zip(trainer.train_dataset, rendered):
        ids, labels = ex["input_ids"], ex["labels"]
        start = next(i for i, lab in enumerate(labels) if lab != -100)
        assert all(lab != -100 for lab in labels[start:])  # one contiguous completion
        label_word = "AB"[shown["label"]]
        expected = tok.encode(format_verdict(shown["rationale"], label_word), add_special_tokens=False)
        assert ids[start:] == expected + [tok.eos_token_id]
        prompt = trainer.judge.render_prompt(shown["question"], shown["first"], shown["second"])
        assert ids[:start] == tok.encode(prompt, add_special_tokens=False)
        slots = [i for i, lab in enumerate(labels) if lab <= LABEL_SLOT_BASE]
        assert len(slots) == 1 and ids[slots[0]] == (a_id, b_id)[shown["label"]]
        assert labels[slots[0]] == slot_marker(shown["label"])


def test_direct_mode_supervises_only_the_label(tok, tmp_path):
    rows = rule_rows(6, seed=1)
    trainer = GramRewardTrainer(
        make_model(tok),
        _args(tmp_path, mode="direct"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        template=SHORT_DIRECT_TEMPLATE,
    )
    for ex, shown in zip(trainer.train_dataset, trainer.rendered_train_dataset):
        supervised = [i for i, lab in enumerate(ex["labels"]) if lab != -100]
        assert supervised == [len(ex["input_ids"]) - 1]
        assert ex["labels"][-1] == slot_marker(shown["label"])
        assert ex["input_ids"][-1] == trainer.label_token_ids[shown["label"]]
        prompt = trainer.judge.render_prompt(shown["question"], shown["first"], shown["second"], mode="direct")
        assert prompt.endswith("Better: <|im_end|>\n<|im_start|>assistant\n")
        assert ex["input_ids"][:-1] == tok.encode(prompt, add_special_tokens=False)


def _manual_loss(model, batch, label_ids, eps, weight, smoothing, replace):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            lab = int(labels[b, t])
            if lab == -100:
                continue
            count += 1
            if lab <= LABEL_SLOT_BASE:
                target = LABEL_SLOT_BASE - lab
                if smoothing:
                    two = logits[b, t, list(label_ids)]
                    total += weight * label_smoothing_loss(two[None], torch.tensor([target]), eps).item()
                    if replace:  # direct: the 2-way loss replaces the label token's loss
                        continue
                lab = label_ids[target]
            total += -F.log_softmax(logits[b, t], -1)[lab].item()
    return total / count


@pytest.mark.parametrize(
    "mode,label_loss", [("reason", "nll"), ("reason", "label_smoothing"), ("direct", "label_smoothing")]
)
def test_compute_loss_equals_hand_computation(tok, tmp_path, mode, label_loss):
    template = SHORT_REASON_TEMPLATE if mode == "reason" else SHORT_DIRECT_TEMPLATE
    args = _args(tmp_path, mode=mode, label_loss=label_loss, label_smoothing_epsilon=0.2, label_loss_weight=0.7)
    model = make_model(tok, seed=3)
    trainer = GramRewardTrainer(
        model, args, train_dataset=Dataset.from_list(rule_rows(4, 2, True)), processing_class=tok, template=template
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        expected = _manual_loss(
            model, batch, trainer.label_token_ids, 0.2, 0.7, label_loss == "label_smoothing", mode == "direct"
        )
        got = trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()}).item()
        # As in training, where Trainer counts the supervised positions (slots included) of the whole batch.
        count = (batch["labels"][:, 1:] != -100).sum()
        got_counted = trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()}, num_items_in_batch=count)
    assert math.isclose(got, expected, rel_tol=1e-4), (got, expected)
    assert math.isclose(got_counted.item(), expected, rel_tol=1e-4), (got_counted.item(), expected)


def _direct_batch(tok, args):
    """A tiny model, its direct-mode trainer and a collated batch of 4 direct examples."""
    model = make_model(tok, seed=5)
    trainer = GramRewardTrainer(
        model,
        args,
        train_dataset=Dataset.from_list(rule_rows(8, 4, True)),
        processing_class=tok,
        template=SHORT_DIRECT_TEMPLATE,
    )
    return model, trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(4)])


def test_label_smoothing_gradient_matches_full_logits(tok, tmp_path):
    """Direct mode, ε = 0: the trainer's 2-way loss, read from the captured hidden states at the slots, has the same
    value and the same gradient for every parameter as a 2-way cross-entropy over the full forward's logits."""
    args = _args(tmp_path, mode="direct", label_loss="label_smoothing", label_smoothing_epsilon=0.0)
    model, trainer, batch = _direct_batch(tok, args)
    model.train()
    ours = trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()})
    ours.backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    _, mask, targets = split_label_slots(batch["labels"], trainer.label_token_ids, keep_in_lm=False)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    before_slot = torch.zeros_like(mask)
    before_slot[:, :-1] = mask[:, 1:]
    reference = F.cross_entropy(logits[before_slot][:, list(trainer.label_token_ids)], targets)
    reference.backward()
    assert math.isclose(ours.item(), reference.item(), rel_tol=1e-5)
    checked = 0
    for name, param in model.named_parameters():
        if param.grad is None:
            continue
        assert name in ours_grads, name
        torch.testing.assert_close(ours_grads[name], param.grad, rtol=1e-4, atol=1e-6)
        checked += 1
    assert checked > 5


def test_direct_label_only_batches_skip_the_full_vocabulary_logits(tok, tmp_path):
    """Direct examples with the 2-way loss have no next-token target: the LM head runs on the last position of each
    row and on the label slots only (not on every position), the loss is unchanged (see the two tests above) and the
    trained-token count is still logged."""
    args = _args(tmp_path, mode="direct", label_loss="label_smoothing")
    model, trainer, batch = _direct_batch(tok, args)
    rows_seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows_seen.append(i[0].shape[:-1]))
    try:
        model.train()
        loss = trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()})
    finally:
        hook.remove()
    loss.backward()
    assert rows_seen == [torch.Size([4, 1]), torch.Size([4])], rows_seen
    assert trainer._metrics["train"]["num_tokens"] == [int(batch["attention_mask"].sum())]
    assert trainer._metrics["train"]["label_accuracy"] and "entropy" not in trainer._metrics["train"]
