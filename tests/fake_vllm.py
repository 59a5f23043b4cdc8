"""A stand-in for ``vllm.LLM`` running a transformers model: the part of ``LLM.generate`` the vLLM backend uses
(token prompts, greedy or seeded sampling, stop strings, ``logprob_token_ids``, ``prompt_logprobs``, ``n``)."""

from types import SimpleNamespace

import torch


class FakeParams(SimpleNamespace):
    """Stands in for ``vllm.SamplingParams`` (keyword arguments kept as attributes)."""


class FakeLLM:
    """Implements the part of ``vllm.LLM.generate`` the adapter uses, with a transformers model."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.requests = []
        self.released = False

    def get_tokenizer(self):
        return self.tokenizer

    @torch.no_grad()
    def generate(self, prompts, params, use_tqdm=True):
        return [self._one(p["prompt_token_ids"], sp) for p, sp in zip(prompts, params)]

    def _one(self, ids, sp):
        self.requests.append((list(ids), sp))
        prompt_logprobs = None
        if getattr(sp, "prompt_logprobs", None) is not None:
            logp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)
            prompt_logprobs = [None] + [
                {ids[k]: SimpleNamespace(logprob=float(logp[k - 1, ids[k]]))} for k in range(1, len(ids))
            ]
        assert getattr(sp, "logprobs", None) is None  # top-k log-probabilities are never asked for
        rng = torch.Generator().manual_seed(getattr(sp, "seed", None) or 0)
        outputs = [self._complete(ids, sp, rng) for _ in range(getattr(sp, "n", None) or 1)]
        return SimpleNamespace(outputs=outputs, prompt_logprobs=prompt_logprobs)

    def _complete(self, ids, sp, rng):
        gen, steps, finish, text = [], [], "length", ""
        for _ in range(sp.max_tokens):
            logits = self.model(torch.tensor([ids + gen])).logits[0, -1].float()
            logp = torch.log_softmax(logits, -1)
            if sp.temperature == 0:
                token = int(logits.argmax())
            else:
                token = int(torch.multinomial(torch.softmax(logits / sp.temperature, -1), 1, generator=rng))
            gen.append(token)
            if getattr(sp, "logprob_token_ids", None):
                steps.append({t: SimpleNamespace(logprob=float(logp[t])) for t in sp.logprob_token_ids + [token]})
            text = self.tokenizer.decode(gen, skip_special_tokens=getattr(sp, "skip_special_tokens", True))
            stops = [s for s in getattr(sp, "stop", None) or [] if s in text]
            if stops:
                cut = text.index(stops[0]) + (len(stops[0]) if sp.include_stop_str_in_output else 0)
                text, finish = text[:cut], "stop"
                break
            if token == self.tokenizer.eos_token_id:
                finish = "stop"
                break
        return SimpleNamespace(text=text, token_ids=gen, finish_reason=finish, logprobs=steps or None)
