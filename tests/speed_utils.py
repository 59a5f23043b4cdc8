"""Shared fixtures data for the speed/serving/vLLM tests: GRPO-like pairs and a tiny judge trained to write a verdict
(trained once per test session)."""

import functools

import torch
from tiny_models import tiny_llama

QUESTIONS = ["What is 2 + 3?", "Write a poem about the sea."]
RESPONSES = [
    ["The answer is 5.", "It is 6.", "5", "The answer is 5, because 2 + 3 = 5. Hello world, how are you today?"],
    ["The sea is big and blue and deep.", "Sea.", "Fine, thanks.", "The sky, the sea, the sky and the sea."],
]
VERDICT = "<think>\nFeedback: wrong sum.\n</think>\n<answer>\nB\n</answer>"


def grpo_pairs(responses=RESPONSES, questions=QUESTIONS):
    """All pairs within each group (the layout of ``reference="group"``)."""
    q, a, b = [], [], []
    for question, group in zip(questions, responses):
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                q.append(question)
                a.append(group[i])
                b.append(group[j])
    return q, a, b


@functools.lru_cache(maxsize=1)
def _verdict_state(tokenizer):
    from trl_gram.judge import GramJudge

    model = tiny_llama(tokenizer, seed=0, hidden=64)
    judge = GramJudge(model, tokenizer)
    target = tokenizer.encode(VERDICT, add_special_tokens=False)
    q, a, b = grpo_pairs()
    prompts = [judge.encode_prompt(x, y, z, "reason")[0] for x, y, z in zip(q, a, b)][::4]
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(120):
        for p in prompts:
            ids = torch.tensor([p + target])
            labels = ids.clone()
            labels[0, : len(p)] = -100
            model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def verdict_model(tokenizer):
    """A tiny model trained to answer judge prompts with VERDICT (reaches the answer slot); a fresh copy each call."""
    model = tiny_llama(tokenizer, seed=0, hidden=64)
    model.load_state_dict(_verdict_state(tokenizer))
    return model.eval()
