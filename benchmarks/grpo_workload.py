"""A GRPO-like judging workload: P prompts × G completions of 100–300 tokens, compared within each group.

Questions come from ``../shared/data/hh_rlhf_harmless_base_test.jsonl.gz`` (single-turn prompts, the last human turn)
when the file is there, else from a built-in list. Completions are real assistant responses from the same file (the
prompt's own chosen and rejected responses first, then responses of other prompts), concatenated and cut to a target
length drawn uniformly in [min_tokens, max_tokens] tokens of the judge's tokenizer; without the data file, built-in
paragraphs play that role. Completions of a group share no text on purpose, so prefix sharing in the benchmark comes
only from what GRPO really shares: the judge template, the question, and each completion being compared with the others.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from pathlib import Path

HH_FILE = "hh_rlhf_harmless_base_test.jsonl.gz"

BUILTIN_QUESTIONS = [
    "How do I make a cup of green tea that is not bitter?",
    "What are some good ways to save money on groceries?",
    "Can you explain what a black hole is to a ten-year-old?",
    "What should I pack for a three-day hiking trip?",
    "How can I improve my sleep without taking medication?",
    "Why is the sky blue during the day and red at sunset?",
    "What is a healthy way to deal with stress at work?",
    "How do vaccines train the immune system?",
    "Give me tips to learn a new language as an adult.",
    "What are the pros and cons of electric cars?",
]

BUILTIN_PARAGRAPHS = [
    "Start by heating the water to about eighty degrees Celsius rather than boiling it, because very hot water "
    "extracts tannins that make the drink bitter. Steep the leaves for two minutes, taste, and adjust next time.",
    "Plan your meals for the week before you shop, make a list and stick to it. Buying staples such as rice, beans "
    "and oats in bulk lowers the price per portion, and store brands are often as good as the famous ones.",
    "A black hole is a place in space where gravity pulls so hard that nothing, not even light, can get out. It "
    "forms when a very big star runs out of fuel and collapses into a tiny, extremely dense point.",
    "Bring layers of clothing, a rain jacket, a map, a first aid kit, enough water and food, a headlamp and a way to "
    "purify water. Check the weather forecast and tell someone where you are going and when you will be back.",
    "Keep a regular schedule, go to bed and wake up at the same time every day, avoid screens an hour before bed, "
    "keep the bedroom cool and dark, and limit caffeine in the afternoon. Exercise helps, but not right before bed.",
    "Sunlight is scattered by the molecules of the air, and short blue wavelengths are scattered much more than red "
    "ones. At sunset the light crosses more air, so most of the blue is scattered away and reds and oranges remain.",
    "Take short breaks, breathe slowly, write down what worries you and break big tasks into small steps. Talking "
    "with a colleague or a friend helps, and so does protecting time for sleep, meals and some physical activity.",
    "Vaccines show the immune system a harmless piece or weakened form of a germ. The body makes antibodies and "
    "memory cells, so if the real germ arrives later, the defence is fast and strong enough to prevent disease.",
    "I am not sure about that. Maybe you could search the internet for more information, or ask somebody who knows "
    "the topic better than I do. There are many opinions and it is hard to say which one is right.",
    "Electric cars are quiet, cheap to run and produce no exhaust where they drive, but they cost more to buy, take "
    "longer to recharge than a tank takes to fill, and their range drops in cold weather.",
]


@dataclass
class Workload:
    questions: list[str]  # one per group
    completions: list[list[str]]  # G per group
    source: str

    def group_pairs(self, groups: int | None = None) -> tuple[list[str], list[str], list[str]]:
        """All pairs within each of the first ``groups`` groups (``reference="group"`` of the reward)."""
        q, a, b = [], [], []
        for question, group in list(zip(self.questions, self.completions))[:groups]:
            for i in range(len(group)):
                for j in range(i + 1, len(group)):
                    q.append(question)
                    a.append(group[i])
                    b.append(group[j])
        return q, a, b


def _split_hh(text: str) -> tuple[str, str]:
    cut = text.rfind("\n\nAssistant:")
    return text[:cut], text[cut + len("\n\nAssistant:") :].strip()


def _hh_rows(data_dir: Path):
    path = data_dir / HH_FILE
    if not path.is_file():
        return None
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            prompt, chosen = _split_hh(row["chosen"])
            _, rejected = _split_hh(row["rejected"])
            if prompt.count("Human:") == 1 and chosen and rejected:
                out.append((prompt.split("Human:", 1)[1].strip(), chosen, rejected))
    return out


def build_workload(
    tokenizer,
    prompts: int = 8,
    completions: int = 8,
    min_tokens: int = 100,
    max_tokens: int = 300,
    data_dir: str | Path | None = "../shared/data",
    seed: int = 0,
) -> Workload:
    rng = random.Random(seed)
    rows = _hh_rows(Path(data_dir)) if data_dir is not None else None
    if rows:
        rng.shuffle(rows)
        picked = rows[:prompts]
        pool = [r[1] for r in rows[prompts:]] + [r[2] for r in rows[prompts:]]
        starts = [[r[1], r[2]] for r in picked]
        questions = [r[0] for r in picked]
        source = f"hh-rlhf harmless-base test ({HH_FILE})"
    else:
        questions = [BUILTIN_QUESTIONS[i % len(BUILTIN_QUESTIONS)] for i in range(prompts)]
        pool = list(BUILTIN_PARAGRAPHS)
        starts = [[BUILTIN_PARAGRAPHS[i % len(BUILTIN_PARAGRAPHS)]] for i in range(prompts)]
        source = "built-in questions and paragraphs"
    groups = []
    for g in range(prompts):
        group = []
        # Every completion of a group starts with a different text: no accidental shared prefixes.
        firsts = list(starts[g][:completions])
        others = [p for p in pool if p not in firsts]
        firsts += rng.sample(others, completions - len(firsts))
        for c in range(completions):
            target = rng.randint(min_tokens, max_tokens)
            parts = [firsts[c]]
            ids: list[int] = []
            while True:
                ids = tokenizer.encode("\n\n".join(parts), add_special_tokens=False) if parts else []
                if len(ids) >= target:
                    break
                parts.append(rng.choice(pool))
            group.append(tokenizer.decode(ids[:target]).strip())
        groups.append(group)
    return Workload(questions, groups, source)
