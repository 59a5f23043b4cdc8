"""[`TransformersBackend`]: a judge on padded `forward` / `generate` batches of a transformers causal LM."""

from __future__ import annotations

import torch

from ...batching import left_pad, token_budget_batches
from .base import GenerationSettings, SlotGeneration, read_forced_slots, strip_padding, weights_fingerprint
from .slots import AT_SLOT, AnswerSlotStopper, LabelLogitRecorder


class TransformersBackend:
    """Plain batched inference: one left-padded `forward` per batch for slot logits, `generate` with an answer-slot
    stopping criterion and a label-logit recorder for rationales.

    Args:
        model ([`~transformers.PreTrainedModel`]): A loaded causal LM (optionally a PEFT model).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): Its tokenizer.
        pad_id (`int`): Padding token id.
        token_budget (`int`): Upper bound of rows × padded length (plus `max_new_tokens` when generating) per batch.
        max_batch_rows (`int` or `None`): Upper bound of rows per batch.
    """

    name = "transformers"

    def __init__(self, model, tokenizer, pad_id: int, token_budget: int = 32768, max_batch_rows: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.token_budget = token_budget
        self.max_batch_rows = max_batch_rows

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self):
        return weights_fingerprint(self.model)

    def release(self) -> None:
        self.model = None

    @torch.no_grad()
    def slot_logits(self, prompts, label_ids, *, progress=None) -> list[torch.Tensor]:
        ids_t = torch.as_tensor(label_ids, device=self.device)
        out: list[torch.Tensor | None] = [None] * len(prompts)
        for batch in token_budget_batches([len(s) for s in prompts], self.token_budget, max_rows=self.max_batch_rows):
            ids, mask, pos = left_pad([prompts[j] for j in batch], self.pad_id, self.device)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits
            picked = logits[:, -1, :].index_select(-1, ids_t).float().cpu()
            for row, j in enumerate(batch):
                out[j] = picked[row]
            if progress is not None:
                progress.update(len(batch))
        return out

    @torch.no_grad()
    def generate_to_slot(
        self, prompts, label_ids, *, answer_open, forced_text, settings: GenerationSettings, progress=None
    ) -> list[SlotGeneration]:
        s = settings
        gen_kwargs = dict(
            max_new_tokens=s.max_new_tokens,
            do_sample=s.sample,
            pad_token_id=self.pad_id,
            return_dict_in_generate=False,
        )
        if s.sample:
            gen_kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        results: list[SlotGeneration | None] = [None] * len(prompts)
        batches = token_budget_batches(
            [len(p) for p in prompts], self.token_budget, extra=s.max_new_tokens, max_rows=self.max_batch_rows
        )
        for b, batch in enumerate(batches):
            ids, mask, _ = left_pad([prompts[j] for j in batch], self.pad_id, self.device)
            recorder = LabelLogitRecorder(label_ids)
            stopper = AnswerSlotStopper(self.tokenizer, answer_open, ids.shape[1], len(batch))
            if s.sample:
                torch.manual_seed(s.seed + b)
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                logits_processor=[recorder],
                stopping_criteria=[stopper],
                **gen_kwargs,
            )
            generated = out[:, ids.shape[1] :].tolist()
            for row, j in enumerate(batch):
                gen, step = generated[row], stopper.slot_step[row]
                reached = stopper.state[row] == AT_SLOT
                if reached:
                    gen, slot = gen[: step + 1], recorder.at(step, row)
                else:
                    gen, slot = strip_padding(gen, self.pad_id, self.tokenizer.eos_token_id), None
                results[j] = SlotGeneration(self.tokenizer.decode(gen, skip_special_tokens=True), slot, reached)
            if progress is not None:
                progress.update(len(batch))
        read_forced_slots(self, prompts, results, label_ids, forced_text, s.force_answer)
        return results
