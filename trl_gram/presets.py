"""Presets for the released GRAM checkpoints: the template, chat-template arguments and label scoring each was
evaluated with by its authors, picked automatically by [`~trl_gram.GramJudge.from_pretrained`].

The table follows the paper's repository (NiuTrans/GRAM: ``README.md`` lists the GRAM v1 checkpoints,
``extensions/GRAM-RR/README.md`` the GRAM-R² ones) and its evaluation code:

* **GRAM v1** (``wangclnlp/GRAM-Qwen3-{1.7B,4B,8B,14B}-RewardModel``, ``wangclnlp/GRAM-LLaMA3.2-3B-RewardModel``):
  direct judges. ``evaluation/gram_eval.py`` renders the GRAM v1 prompt (ending in ``#Preferred: ``) as one user
  message with ``apply_chat_template(..., add_generation_prompt=True, enable_thinking=False)`` and reads the bare
  ``A``/``B`` tokens at the last position, averaging both orders. ``enable_thinking=False`` matters for the Qwen3
  checkpoints (the template then ends with an empty ``<think>\\n\\n</think>\\n\\n`` block); the LLaMA chat template
  ignores it. Preset: ``mode="direct"``, ``template="gram-v1"``, ``chat_template_kwargs={"enable_thinking": False}``,
  ``label_scoring="official"``.
* **GRAM-R²** (``wangclnlp/GRAM-RR-LLaMA-3.1-8B-RewardModel``, ``wangclnlp/GRAM-RR-LLaMA-3.2-3B-RewardModel``):
  reasoning judges, GRAM-R² prompt through the chat template with no extra argument. Preset: ``mode="reason"``,
  ``template="gram-r2"``, ``label_scoring="official"``.

``label_scoring`` (a [`~trl_gram.judge.GramJudgeConfig`] field) chooses the label tokens whose logits give the
probability: ``"official"`` uses the bare ``A`` and ``B`` tokens only, as the official code does; ``"merged"`` (the
default for other models) also adds the probability of the spaced spellings ``" A"`` and ``" B"`` when those are single
tokens, which helps small zero-shot models that put their mass on the spaced token.

Every preset value is a default: an explicit argument to ``from_pretrained`` wins.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

LABEL_SCORINGS = ("official", "merged")


@dataclass(frozen=True)
class GramPreset:
    """How a released checkpoint is judged with, as its authors evaluate it.

    Args:
        name (`str`):
            The Hub id of the checkpoint.
        family (`str`):
            ``"gram-v1"`` or ``"gram-r2"``.
        architecture (`str`):
            The backbone class (``"Qwen3ForCausalLM"`` or ``"LlamaForCausalLM"``).
        mode (`str`):
            ``"direct"`` (GRAM v1) or ``"reason"`` (GRAM-R²).
        template (`str`):
            Registered template name.
        chat_template_kwargs (`dict`):
            Extra ``apply_chat_template`` arguments the official code passes.
        label_scoring (`str`):
            ``"official"`` or ``"merged"`` (see the module documentation).
    """

    name: str
    family: str
    architecture: str
    mode: str
    template: str
    chat_template_kwargs: dict = field(default_factory=dict)
    label_scoring: str = "official"

    def judge_fields(self) -> dict:
        """The [`~trl_gram.judge.GramJudgeConfig`] fields this preset sets."""
        return {
            "mode": self.mode,
            "template": self.template,
            "chat_template_kwargs": dict(self.chat_template_kwargs),
            "label_scoring": self.label_scoring,
        }


def _v1(name: str, arch: str) -> GramPreset:
    return GramPreset(name, "gram-v1", arch, "direct", "gram-v1", {"enable_thinking": False})


def _r2(name: str) -> GramPreset:
    return GramPreset(name, "gram-r2", "LlamaForCausalLM", "reason", "gram-r2")


PRESETS: dict[str, GramPreset] = {
    p.name: p
    for p in (
        _r2("wangclnlp/GRAM-RR-LLaMA-3.1-8B-RewardModel"),
        _r2("wangclnlp/GRAM-RR-LLaMA-3.2-3B-RewardModel"),
        _v1("wangclnlp/GRAM-Qwen3-14B-RewardModel", "Qwen3ForCausalLM"),
        _v1("wangclnlp/GRAM-Qwen3-8B-RewardModel", "Qwen3ForCausalLM"),
        _v1("wangclnlp/GRAM-Qwen3-4B-RewardModel", "Qwen3ForCausalLM"),
        _v1("wangclnlp/GRAM-Qwen3-1.7B-RewardModel", "Qwen3ForCausalLM"),
        _v1("wangclnlp/GRAM-LLaMA3.2-3B-RewardModel", "LlamaForCausalLM"),
    )
}
"""The released checkpoints, by Hub id."""

# Family defaults, for a folder whose name says GRAM / GRAM-R² without naming a released checkpoint (a fine-tune of
# one): "GRAM-RR"/"GRAM-R2" with "LLaMA" or "RewardModel" in the name, or "GRAM-Qwen…"/"GRAM-LLaMA…".
FAMILY_PRESETS: dict[str, GramPreset] = {
    "gram-r2": _r2("gram-r2"),
    "gram-v1": _v1("gram-v1", ""),
}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _family_from_name(name: str) -> str | None:
    k = _key(_short(name))
    if ("gramrr" in k or "gramr2" in k) and ("llama" in k or "rewardmodel" in k):
        return "gram-r2"
    if "gramqwen" in k or "gramllama" in k:
        return "gram-v1"
    return None


def get_preset(name: str) -> GramPreset:
    """A preset by Hub id, short name (``"GRAM-Qwen3-8B-RewardModel"``) or family (``"gram-v1"``, ``"gram-r2"``)."""
    if name in PRESETS:
        return PRESETS[name]
    if name in FAMILY_PRESETS:
        return FAMILY_PRESETS[name]
    for preset in PRESETS.values():
        if _key(_short(preset.name)) == _key(_short(name)):
            return preset
    choices = sorted(PRESETS) + sorted(FAMILY_PRESETS)
    raise ValueError(f"Unknown `preset` {name!r}: pass one of {choices}, 'auto', or None.")


def _config_names(model_name_or_path: str) -> tuple[list[str], list[str]]:
    """``_name_or_path`` and ``architectures`` from a local folder's ``config.json`` (older checkpoints keep the
    former; transformers drops it when loading)."""
    path = Path(model_name_or_path) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], []
    names = [raw["_name_or_path"]] if isinstance(raw.get("_name_or_path"), str) else []
    arch = [a for a in raw.get("architectures") or [] if isinstance(a, str)]
    return names, arch


def detect_preset(model_name_or_path: str | None, model_config=None) -> GramPreset | None:
    """The preset of a released checkpoint, from its id or folder name, else its config's ``_name_or_path``; a name
    that says GRAM / GRAM-R² without a released size gives the family preset. ``None`` for any other model.

    Args:
        model_name_or_path (`str` or `None`):
            What was passed to ``from_pretrained``.
        model_config ([`~transformers.PretrainedConfig`], *optional*):
            The loaded model's config (its ``architectures`` tell a Qwen3 backbone from a LLaMA one).
    """
    candidates = [str(model_name_or_path)] if model_name_or_path else []
    file_names, file_arch = _config_names(str(model_name_or_path)) if model_name_or_path else ([], [])
    cfg_name = getattr(model_config, "_name_or_path", None)
    candidates += file_names + ([cfg_name] if isinstance(cfg_name, str) else [])
    arch = list(getattr(model_config, "architectures", None) or []) or file_arch
    for cand in candidates:
        k = _key(_short(cand.rstrip("/")))
        for preset in PRESETS.values():
            if _key(_short(preset.name)) in k:
                return preset
    for cand in candidates:
        family = _family_from_name(cand.rstrip("/"))
        if family is not None:
            preset = FAMILY_PRESETS[family]
            return dataclasses.replace(preset, architecture=arch[0]) if arch else preset
    return None


def resolve_preset(preset: str | GramPreset | None, model_name_or_path: str | None, model_config=None):
    """``"auto"``: [`detect_preset`]; a name: [`get_preset`]; a [`GramPreset`] as is; ``None``: no preset."""
    if preset is None or isinstance(preset, GramPreset):
        return preset
    if preset == "auto":
        return detect_preset(model_name_or_path, model_config)
    return get_preset(preset)
