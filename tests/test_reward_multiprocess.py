"""Under two processes a GRPO group split across ranks is gathered and judged whole (or refused loudly)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from reward_split_groups import COMPLETIONS, PROMPTS, LengthJudge  # noqa: E402

from trl_gram.reward import GenerativeRewardFunction  # noqa: E402


@pytest.mark.slow
@pytest.mark.multiprocess
def test_split_group_is_gathered_across_two_ranks(tmp_path):
    script = Path(__file__).parent / "scripts" / "reward_split_groups.py"
    # Trainers that ran earlier in this pytest process leave distributed settings in os.environ; start clean.
    leaked = ("ACCELERATE_", "MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaked)}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        str(script),
        str(tmp_path),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[:3000] + "\n...\n" + out.stderr[-1500:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    expected = GenerativeRewardFunction(LengthJudge(), reference="group")(PROMPTS, COMPLETIONS)
    assert ranks[0]["rewards"] + ranks[1]["rewards"] == pytest.approx(expected)
    # Judged per rank without gathering, group "q" would be split: [b] | [bbbbb, bb] gives other numbers.
    partial = GenerativeRewardFunction(LengthJudge(), reference="group")(PROMPTS[4:], COMPLETIONS[4:])
    assert partial != pytest.approx(ranks[1]["rewards"])
    assert all("split across ranks" in r["strict"] for r in ranks)
