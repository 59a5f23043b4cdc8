"""Run under `accelerate launch` with two CPU processes: a tiny GRPO run with [`GramWinRateCallback`] on 5 prompts
with a reference column; each rank writes the prompts its judge saw and the callback's gathered history and table."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import Dataset  # noqa: E402
from tiny_models import tiny_llama, tiny_tokenizer  # noqa: E402

from trl_gram.judge import JudgeRun, PairJudgment  # noqa: E402


class LengthJudge:
    """Prefers the longer response: P(response_1 better) = len(r1) / (len(r1) + len(r2)); records what it judged."""

    def __init__(self):
        self.seen = []

    @staticmethod
    def prob(a: str, b: str) -> float:
        return (len(a) + 1) / (len(a) + len(b) + 2)

    def judge(self, questions, responses_1, responses_2, **kwargs):
        self.seen.extend(questions)
        out = []
        for a, b in zip(responses_1, responses_2):
            p = self.prob(a, b)
            label = "A" if p >= 0.5 else "B"
            runs = [JudgeRun("AB", p, label), JudgeRun("BA", 1 - p, "B" if label == "A" else "A")]
            out.append(PairJudgment(p, label, True, runs))
        return out


EVAL = Dataset.from_dict(
    {
        "prompt": ["What is 2 + 3?", "Name a colour.", "Say hello.", "Count to three.", "Write a poem."],
        "reference": ["5", "a fairly long reference answer", "hi", "one two three", "ok"],
    }
)

if __name__ == "__main__":
    from trl import GRPOConfig, GRPOTrainer

    from trl_gram.callbacks import GramWinRateCallback
    from trl_gram.script_utils import end_distributed

    out = Path(sys.argv[1])
    tokenizer = tiny_tokenizer()
    args = GRPOConfig(
        output_dir=str(out), max_steps=1, per_device_train_batch_size=2, num_generations=2,
        max_completion_length=4, learning_rate=1e-4, logging_steps=1, report_to="none", use_cpu=True,
        save_strategy="no", seed=0,
    )  # fmt: skip
    judge = LengthJudge()
    trainer = GRPOTrainer(
        model=tiny_llama(tokenizer, seed=1),
        reward_funcs=[lambda completions, **kw: [float(len(c)) for c in completions]],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["a", "b", "c", "d"]}),
        processing_class=tokenizer,
    )
    callback = GramWinRateCallback(trainer, judge=judge, dataset=EVAL, reference_column="reference")
    trainer.add_callback(callback)
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {
        "seen": judge.seen,
        "history": callback.history,
        "tables": {str(k): v for k, v in callback.tables.items()},
    }
    result["world"] = trainer.accelerator.num_processes
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    end_distributed(trainer)
