"""Copy a stage checkpoint (a LoRA adapter) of the embedded-judge recipe into the package as the default judge.

    python research/embedded_judge/export_adapter.py runs/embedded_judge/run/final/checkpoint

Writes ``trl_gram/embedded_judge/adapter_config.json`` and ``adapter_model.safetensors`` with the weights in float16
(half the size; peft casts them back to the base model's float32 on load) and the base model named by its embedded
name instead of this machine's cache path. Prints the size and a digest of the weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trl_gram.default_model import DEFAULT_MODEL_NAME, EMBEDDED_ADAPTER_DIR

TARGET = Path(__file__).resolve().parents[2] / "trl_gram" / EMBEDDED_ADAPTER_DIR


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "checkpoint", help="A stage's checkpoint/ folder (adapter_config.json + adapter_model.safetensors)."
    )
    p.add_argument("--out", default=str(TARGET))
    a = p.parse_args(argv)
    src, out = Path(a.checkpoint), Path(a.out)
    config = json.loads((src / "adapter_config.json").read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{src} holds no LoRA adapter (peft_type={config.get('peft_type')!r}).")
    config["base_model_name_or_path"] = DEFAULT_MODEL_NAME
    weights = {
        k: v.to(torch.float16).contiguous() for k, v in load_file(str(src / "adapter_model.safetensors")).items()
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(weights, str(out / "adapter_model.safetensors"), metadata={"format": "pt", "source": str(src)})
    size = sum(f.stat().st_size for f in out.iterdir())
    digest = hashlib.sha256((out / "adapter_model.safetensors").read_bytes()).hexdigest()[:16]
    print(f"{out}: {size / 2**20:.1f} MiB, adapter weights sha256 {digest}")


if __name__ == "__main__":
    main()
