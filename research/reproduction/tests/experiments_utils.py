"""Hand-made data files and a tiny model folder for the experiment tests (no ../shared, no network)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_hh(path: Path, n: int = 60) -> Path:
    """An hh-rlhf-style gzip JSON-lines file of ``n`` short transcripts (the chosen reply is polite)."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(n):
            q = f"\n\nHuman: How do I cook dish number {i}?"
            long = " with extra words" * (i % 5)  # varied lengths for the length filter
            f.write(
                json.dumps(
                    {
                        "chosen": f"{q}\n\nAssistant: Boil it for {i % 7 + 2} minutes{long}.",
                        "rejected": f"{q}\n\nAssistant: I will not help you{long}.",
                    }
                )
                + "\n"
            )
    return path


def write_pandalm(path: Path, n: int = 30) -> Path:
    """A PandaLM-style JSON list; every fifth row is a tie (to be dropped)."""
    rows = []
    for i in range(n):
        votes = (0, 0, 0) if i % 5 == 0 else ((1, 1, 2) if i % 2 else (2, 2, 1))
        rows.append(
            {
                "idx": i,
                "motivation_app": "test",
                "cmp_key": "x",
                "instruction": f"Add {i} and 1.",
                "input": "",
                "response1": f"{i + 1}",
                "response2": f"{i + 2}",
                "annotator1": votes[0],
                "annotator2": votes[1],
                "annotator3": votes[2],
            }
        )
    path.write_text(json.dumps(rows))
    return path


def write_judgebench(path: Path, n: int = 12) -> Path:
    sources = ["mmlu-pro-x", "livebench-reasoning", "livebench-math", "livecodebench"]
    rows = [
        {
            "pair_id": i,
            "original_id": str(i),
            "source": sources[i % 4],
            "response_model": "m",
            "prompt": f"Question {i}?",
            "chosen": f"Right answer {i}.",
            "rejected": f"Wrong answer {i + 1}.",
        }
        for i in range(n)
    ]
    path.write_text(json.dumps(rows))
    return path


def tiny_model_dir(path: Path) -> str:
    """A random tiny Llama + byte-level BPE tokenizer saved as a model folder."""
    from tiny_models import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=1)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)
