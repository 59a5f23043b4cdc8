"""Generation hooks for reasoning judges: stop right after the label token, and keep the label-token logits.

A reasoning judge writes ``<think>…</think>\\n<answer>\\nA``. Generation stops as soon as the first non-blank token
after ``<answer>`` is produced (that token is the label slot), and :class:`LabelLogitRecorder` keeps, at every step,
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
            if self.state[row] == SEARCHING:
                at = tail.lower().rfind(self.tag)
                if at < 0:
                    continue
                if tail[at + len(self.tag) :].strip():
                    # The tag was completed by this very token, which also carries text after it.
                    self.state[row], self.slot_step[row] = MERGED, step
                else:
                    self.state[row] = TAG_SEEN
            elif last.strip():
                self.state[row], self.slot_step[row] = AT_SLOT, step
        for row, state in enumerate(self.state):
            done[row] = state in (AT_SLOT, MERGED)
        return done
