"""Run under `torchrun --nproc_per_node 2` (CPU, gloo): each rank holds a slice of a GRPO batch in which a group is
split across ranks; the reward must score every completion against its whole group."""

import json
import sys

from accelerate import PartialState

from trl_gram.judge import JudgeRun, PairJudgment
from trl_gram.reward import GenerativeRewardFunction
from trl_gram.script_utils import end_distributed


class LengthJudge:
    def judge(self, questions, responses_1, responses_2, **kwargs):
        out = []
        for a, b in zip(responses_1, responses_2):
            p = len(a) / (len(a) + len(b))
            out.append(PairJudgment(p, "A", None, [JudgeRun("AB", p, "A")]))
        return out


PROMPTS = ["p"] * 3 + ["q"] * 3 + ["r"] * 2
COMPLETIONS = ["a", "aa", "aaaa", "b", "bbbbb", "bb", "c", "ccc"]

if __name__ == "__main__":
    state = PartialState(cpu=True)  # what a Trainer with use_cpu=True sets up: MULTI_CPU over gloo
    half = len(PROMPTS) // state.num_processes
    lo, hi = state.process_index * half, (state.process_index + 1) * half
    reward = GenerativeRewardFunction(LengthJudge(), reference="group")
    result = {"rewards": reward(PROMPTS[lo:hi], COMPLETIONS[lo:hi])}
    try:
        GenerativeRewardFunction(LengthJudge(), reference="group", gather_groups=False)(
            PROMPTS[lo:hi], COMPLETIONS[lo:hi]
        )
        result["strict"] = "no error"
    except RuntimeError as err:
        result["strict"] = str(err)
    with open(f"{sys.argv[1]}/rank{state.process_index}.json", "w") as f:
        json.dump(result, f)
    end_distributed()
