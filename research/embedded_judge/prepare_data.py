"""Fixed, seeded data slices of the embedded judge's recipe (``recipes/gram_r2_embedded_judge.yaml``).

Reads the human-labelled files in ``../shared/data`` (hh-rlhf harmless-base test, PandaLM test set v1 with ties
removed, JudgeBench) with the project's loader (``trl_gram.formats.load_pairs``), shuffles each source once
with ``--seed`` and cuts disjoint slices, half hh-rlhf and half PandaLM in each training slice:

* ``seed.jsonl``       pairs whose rationales the pipeline bootstraps (seed of the preference-proving model)
* ``labeled.jsonl``    labelled pairs of the initial judge
* ``unlabeled.jsonl``  pairs whose labels the pipeline drops (its unlabeled pool)
* ``heldout_stage.jsonl``  a few held-out pairs judged after every stage (inside the run)
* ``warmup.jsonl``     every remaining labelled pair (``--warmup``: a cap per source), for the direct-mode warm-up
  stage that runs before the reasoning stages (labels only, no rationales)
* ``heldout_hh_rlhf.jsonl``, ``heldout_pandalm.jsonl``, ``heldout_judgebench.jsonl``: the held-out sets of the
  figures; no stage ever sees them (JudgeBench is evaluation only).

Every row is ``prompt`` (a conversation) / ``chosen`` / ``rejected`` / ``source``. ``manifest.json`` records the
sizes, the seed and the row identities (first 40 characters of each prompt) so that a rerun can be checked.

    python research/embedded_judge/prepare_data.py --data ../shared/data --out runs/embedded_judge/data
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from trl_gram.formats import load_pairs

FILES = {
    "hh_rlhf": "hh_rlhf_harmless_base_test.jsonl.gz",
    "pandalm": "pandalm_testset_v1.json",
    "judgebench": "judgebench_gpt.json",
}


def _rows(path: Path, source: str, seed: int) -> list[dict]:
    ds, _ = load_pairs(str(path), ties="drop")
    rows = []
    for r in ds:
        prompt = r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": str(r["prompt"])}]
        rows.append({"prompt": prompt, "chosen": str(r["chosen"]), "rejected": str(r["rejected"]), "source": source})
    random.Random(seed).shuffle(rows)
    return rows


def _write(path: Path, rows: list[dict]) -> str:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="Folder of the shared data files.")
    p.add_argument("--out", default="runs/embedded_judge/data", help="Where the slices are written.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed_pairs", type=int, default=8, help="Seed pairs per source.")
    p.add_argument("--labeled", type=int, default=80, help="Labelled pairs per source.")
    p.add_argument("--unlabeled", type=int, default=32, help="Unlabeled pairs per source.")
    p.add_argument("--stage_eval", type=int, default=6, help="Held-out pairs per source judged after every stage.")
    p.add_argument("--heldout", type=int, default=100, help="Held-out pairs per set of the figures.")
    p.add_argument(
        "--warmup",
        type=int,
        default=-1,
        help="Warm-up pairs per source (the rows left after the other slices; -1: all).",
    )
    a = p.parse_args(argv)
    data, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = {name: _rows(data / FILES[name], name, a.seed) for name in FILES}
    slices: dict[str, list[dict]] = {k: [] for k in ("seed", "labeled", "unlabeled", "heldout_stage", "warmup")}
    for name in ("hh_rlhf", "pandalm"):
        rows = sources[name]
        # held-out rows come first in the shuffled order, so the figures' sets do not move when training slices grow
        cut = [
            ("heldout", a.heldout),
            ("heldout_stage", a.stage_eval),
            ("seed", a.seed_pairs),
            ("labeled", a.labeled),
            ("unlabeled", a.unlabeled),
        ]
        start = 0
        for key, n in cut:
            part = rows[start : start + n]
            if len(part) < n:
                raise ValueError(f"{name}: {len(rows)} rows are too few for the slices {cut}.")
            start += n
            if key == "heldout":
                slices[f"heldout_{name}"] = part
            else:
                slices[key].extend(part)
        rest = rows[start:]
        slices["warmup"].extend(rest if a.warmup < 0 else rest[: a.warmup])
    slices["heldout_judgebench"] = sources["judgebench"][: a.heldout]
    # interleave the two sources in the training slices (rounds take consecutive unlabeled rows)
    rng = random.Random(a.seed + 1)
    for key in ("seed", "labeled", "unlabeled", "heldout_stage", "warmup"):
        rng.shuffle(slices[key])
    manifest = {"seed": a.seed, "data": str(data), "slices": {}}
    for key, rows in slices.items():
        digest = _write(out / f"{key}.jsonl", rows)
        manifest["slices"][key] = {"rows": len(rows), "sha256_16": digest}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
