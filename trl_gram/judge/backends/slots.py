"""Generation hooks for reasoning judges: stop right after the label token, and keep the label-token logits.

A reasoning judge writes ``<think>…</think>\\n<answer>\\nA``. Generation stops as soon as the first non-blank token
after ``<answer>`` is produced (that token is the label slot), and [`LabelLogitRecorder`] keeps, at every step,
the raw logits of the label tokens only. The label distribution at the slot is therefore read from the same forward
pass that produced it: no extra pass and no recomputation of the rationale.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, StoppingCriteria

# Per-row states of the slot detector.
SEARCHING, TAG_SEEN, AT_SLOT, MERGED = 0, 1, 2, 3


class LabelLogitRecorder(LogitsProcessor):
    """Records ``scores[:, label_ids]`` at each generation step and returns the scores unchanged.

    It must run before any temperature/top-k warper, which is where ``generate`` places user processors.
    """

    def __init__(self, label_ids: list[int]):
        self.label_ids = torch.as_tensor(label_ids, dtype=torch.long)
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.steps.append(scores[:, self.label_ids.to(scores.device)].float().cpu())
        return scores

    def at(self, step: int, row: int) -> torch.Tensor:
        return self.steps[step][row]


class AnswerSlotStopper(StoppingCriteria):
    """Stops each row once the token after the answer-open tag (ignoring blanks) has been generated.

    After generation, ``slot_step[row]`` is the index (among generated tokens) of the label-slot token, or -1, and
    ``state[row]`` tells whether the slot was reached (``AT_SLOT``), the tag and the label were fused in one token
    (``MERGED``: the slot must be read by a separate pass), or the tag never came.
    """

    def __init__(self, tokenizer, answer_open: str, prompt_width: int, batch_size: int, window: int = 8):
        self.tokenizer = tokenizer
        self.tag = answer_open.lower()
        self.prompt_width = prompt_width
        self.window = window
        self.state = [SEARCHING] * batch_size
        self.slot_step = [-1] * batch_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        step = input_ids.shape[1] - self.prompt_width - 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        active = [r for r, s in enumerate(self.state) if s in (SEARCHING, TAG_SEEN)]
        if not active:
            return ~done
        start = max(self.prompt_width, input_ids.shape[1] - self.window)
        # Special tokens (padding after an early EOS among them) decode to nothing.
        tails = self.tokenizer.batch_decode(input_ids[active, start:].tolist(), skip_special_tokens=True)
        lasts = self.tokenizer.batch_decode(input_ids[active, -1:].tolist(), skip_special_tokens=True)
        for row, tail, last in zip(active, tails, lasts):
            self.state[row] = advance_slot_state(self.state[row], tail, last, self.tag)
            if self.state[row] in (AT_SLOT, MERGED):
                self.slot_step[row] = step
        for row, state in enumerate(self.state):
            done[row] = state in (AT_SLOT, MERGED)
        return done


def advance_slot_state(state: int, tail: str, last: str, tag: str) -> int:
    """One step of the slot detector for one row: ``tail`` is the decoded text of the last few generated tokens,
    ``last`` that of the newest one, ``tag`` the lower-cased answer-open tag. Returns the new state (``AT_SLOT`` or
    ``MERGED`` mean the newest token is the slot)."""
    if state == SEARCHING:
        at = tail.lower().rfind(tag)
        if at < 0:
            return SEARCHING
        # Text after the tag in the same window: the tag and the label came fused in this very token.
        return MERGED if tail[at + len(tag) :].strip() else TAG_SEEN
    if state == TAG_SEEN and last.strip():
        return AT_SLOT
    return state


class SlotTracker:
    """The detector of [`AnswerSlotStopper`] for a decoding loop that keeps each row's generated ids itself."""

    def __init__(self, tokenizer, answer_open: str, window: int = 8):
        self.tokenizer = tokenizer
        self.tag = answer_open.lower()
        self.window = window

    def update(self, states: list[int], generated: list[list[int]]) -> list[int]:
        """New states of rows still searching, given each row's generated ids so far (newest last)."""
        active = [r for r, s in enumerate(states) if s in (SEARCHING, TAG_SEEN)]
        if not active:
            return list(states)
        tails = self.tokenizer.batch_decode([generated[r][-self.window :] for r in active], skip_special_tokens=True)
        lasts = self.tokenizer.batch_decode([generated[r][-1:] for r in active], skip_special_tokens=True)
        out = list(states)
        for r, tail, last in zip(active, tails, lasts):
            out[r] = advance_slot_state(states[r], tail, last, self.tag)
        return out
