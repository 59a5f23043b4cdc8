"""Losses at the label slot.

GRAM v1 fine-tunes a judge with a cross-entropy over the logits of the two label tokens only (a 2-way softmax at the
position where the label is written), with label smoothing ε. The same term can replace the ordinary next-token loss
of the label token in a reasoning judge ("rationale, then label"), the rationale keeping its language-modelling loss.

The label slot is marked inside the ordinary ``labels`` tensor: a slot whose correct label is the ``k``-th label word
holds ``LABEL_SLOT_BASE - k`` instead of a token id. Markers survive padding, truncation and packing (they are just
label values), and [`split_label_slots`] turns them back into token ids (plain NLL) or into ``-100`` plus slot
targets (label-smoothing loss) right before the forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pair_batches import complete_pairs

LABEL_SLOT_BASE = -1000
"""``labels`` value of a label slot whose target is the first label word; ``LABEL_SLOT_BASE - 1`` for the second."""


def slot_marker(index: int) -> int:
    """The ``labels`` value that marks a label slot whose correct label is label word ``index`` (0 or 1)."""
    if index not in (0, 1):
        raise ValueError(f"a label index must be 0 or 1, got {index!r}.")
    return LABEL_SLOT_BASE - index


def is_slot(labels: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the label-slot positions in a ``labels`` tensor."""
    return (labels <= LABEL_SLOT_BASE) & (labels >= LABEL_SLOT_BASE - 1)


def split_label_slots(
    labels: torch.Tensor, label_token_ids: tuple[int, int] | list[int], keep_in_lm: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resolve the slot markers of ``labels``.

    Returns ``(lm_labels, slot_mask, slot_targets)``: ``lm_labels`` has each marker replaced by its label token id when
    ``keep_in_lm`` (the label token then carries the ordinary next-token loss), else by ``-100``; ``slot_mask`` marks
    the slots; ``slot_targets`` is the label index (0/1) of each slot, in row-major order.
    """
    slot_mask = is_slot(labels)
    targets = (LABEL_SLOT_BASE - labels[slot_mask]).long()
    if keep_in_lm:
        ids = torch.as_tensor(list(label_token_ids), device=labels.device, dtype=labels.dtype)
        replacement = ids[(LABEL_SLOT_BASE - labels).clamp(0, 1)]
    else:
        replacement = torch.full_like(labels, -100)
    lm_labels = torch.where(slot_mask, replacement, labels)
    return lm_labels, slot_mask, targets


def label_smoothing_loss(
    label_logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy over the two label tokens' logits with label smoothing.

    With ``p = softmax(label_logits)`` over the two label words and target ``y``, the loss of one slot is
    ``-(1 - ε) log p_y - ε/2 (log p_0 + log p_1)`` (the smoothed target puts ``1 - ε/2`` on ``y`` and ``ε/2`` on the
    other word, as in ``torch.nn.CrossEntropyLoss(label_smoothing=ε)``).

    Args:
        label_logits: ``(n, 2)`` logits of the two label tokens at ``n`` label slots.
        targets: ``(n,)`` index (0/1) of the correct label word.
        epsilon: Smoothing ε in ``[0, 1)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    if label_logits.ndim != 2 or label_logits.shape[-1] != 2:
        raise ValueError(f"`label_logits` must have shape (n, 2), got {tuple(label_logits.shape)}.")
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"`epsilon` must be in [0, 1), got {epsilon}.")
    log_p = F.log_softmax(label_logits.float(), dim=-1)
    nll = -log_p.gather(-1, targets.long().view(-1, 1)).squeeze(-1)
    smooth = -log_p.mean(dim=-1)
    per_slot = (1.0 - epsilon) * nll + epsilon * smooth
    if reduction == "none":
        return per_slot
    if reduction == "sum":
        return per_slot.sum()
    if reduction == "mean":
        return per_slot.mean() if per_slot.numel() else per_slot.sum()
    raise ValueError(f"`reduction` must be 'mean', 'sum' or 'none', got {reduction!r}.")


def label_logits_at_slots(
    hidden_states: torch.Tensor, slot_mask: torch.Tensor, lm_head: torch.nn.Module, label_token_ids, text_config=None
) -> torch.Tensor:
    """Logits of the two label tokens at each slot, from the backbone's last hidden states.

    The label at position ``t`` is predicted from the hidden state at ``t - 1``. The LM head module is called on the
    few slot rows only (so DeepSpeed ZeRO-3 gathers its weight as in any forward), and the model's logit scaling and
    soft-capping, if any, are applied as in its own forward.
    """
    prev = torch.zeros_like(slot_mask)
    prev[:, :-1] = slot_mask[:, 1:]
    rows = hidden_states[prev.to(hidden_states.device)]
    logits = lm_head(rows)
    logits = logits[:, list(label_token_ids)].float()
    if text_config is not None:
        scale = getattr(text_config, "logit_scale", None)
        if scale is None:
            scale = getattr(text_config, "output_multiplier", None)
        if scale is not None:
            logits = logits * scale
        cap = getattr(text_config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
    return logits


def pairwise_label_loss(
    label_logits: torch.Tensor,
    targets: torch.Tensor,
    pair_order: torch.Tensor,
    epsilon: float = 0.1,
    tilt_weight: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of direct examples that come as both orders of their pairs.

    Row ``r`` has label logits ``label_logits[r]``, target ``targets[r]`` and ``pair_order[r] = 2 * i + swapped`` (pair
    ``i``, shown as given or the other way round). With ``d`` the log-odds of "the first shown response is better",
    a pair whose two orders are both present has the debiased log-odds ``s = (d_given - d_swapped) / 2`` and the
    position tilt ``b = (d_given + d_swapped) / 2``; its loss is the 2-way label-smoothing loss of ``s`` against the
    pair's label plus ``tilt_weight * b**2``, and both of its rows carry it. A row whose other order is not in the
    batch keeps its per-order [`label_smoothing_loss`].

    Returns ``(per_row_loss, stats)``: ``stats`` holds ``pairs`` (count), ``pair_correct`` (pairs whose ``s`` has the
    sign of the label) and ``tilt`` (sum of ``b``), as tensors.
    """
    per_row = label_smoothing_loss(label_logits, targets, epsilon, "none")
    orders = pair_order.tolist()
    if len(orders) != len(per_row):
        raise ValueError(
            f"{len(orders)} pair orders for {len(per_row)} label slots: one slot per example is expected."
        )
    both = complete_pairs(orders, strict=False)
    zero = label_logits.new_zeros((), dtype=torch.float32)
    if not both:
        return per_row, {"pairs": zero, "pair_correct": zero, "tilt": zero}
    u = torch.tensor([given for given, _ in both], device=label_logits.device)
    v = torch.tensor([swapped for _, swapped in both], device=label_logits.device)
    target = targets[u].long()
    if bool((targets[v].long() != 1 - target).any()):
        raise ValueError("The two orders of a pair must have opposite label targets.")
    d = label_logits[:, 0].float() - label_logits[:, 1].float()
    s, b = (d[u] - d[v]) / 2, (d[u] + d[v]) / 2
    pair_loss = label_smoothing_loss(torch.stack([s, torch.zeros_like(s)], dim=-1), target, epsilon, "none")
    pair_loss = pair_loss + tilt_weight * b.pow(2)
    per_row = per_row.index_put((u,), pair_loss).index_put((v,), pair_loss)
    stats = {
        "pairs": torch.tensor(float(len(both)), device=label_logits.device),
        "pair_correct": ((s > 0) == (target == 0)).float().sum().detach(),
        "tilt": b.detach().sum(),
    }
    return per_row, stats
