"""[`JudgeSpec`]: the one description of a judge to load, read by every command and config of trl-gram.

A spec is every [`~trl_gram.judge.GramJudgeConfig`] field (how to judge) plus the options that load the model (which
model, adapter, dtype, device, preset, the backend's sizes). `trl-gram eval` and `trl-gram serve` parse it as it is;
scripts that share a parser with GRPO/SFT/PPO fields parse [`judge_arguments`] (the same fields prefixed `judge_`) and
get the spec back with [`JudgeSpec.from_prefixed`]. Each default is written once, on the config or here.

The fields a released checkpoint's preset sets ([`~trl_gram.presets.GramPreset.judge_fields`]: `mode`, `template`,
`chat_template_kwargs`, `label_scoring`) default to `None` in the spec: the preset's value, else the config's default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .judge import BACKENDS, GramJudgeConfig

PRESET_FIELDS = ("mode", "template", "chat_template_kwargs", "label_scoring")
"""Config fields a checkpoint's preset may set: `None` in a spec means "the preset's, else the config default"."""

_CLI_TYPES = {"template": str | None, "chat_template_kwargs": dict | str | None}
"""Config fields whose Python type is wider than a command line can give (a `JudgeTemplate`, a dict)."""


def _config_fields() -> list[tuple[str, type, dataclasses.Field]]:
    """The config's fields as `make_dataclass` entries: same help, preset fields defaulting to `None`."""
    import typing

    hints = typing.get_type_hints(GramJudgeConfig)
    entries = []
    for f in dataclasses.fields(GramJudgeConfig):
        metadata = dict(f.metadata)
        if f.name in PRESET_FIELDS:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            metadata["help"] = f"{metadata['help']} Default: the checkpoint's preset, else {default!r}."
            new = field(default=None, metadata=metadata)
        elif f.default_factory is not dataclasses.MISSING:
            new = field(default_factory=f.default_factory, metadata=metadata)
        else:
            new = field(default=f.default, metadata=metadata)
        entries.append((f.name, _CLI_TYPES.get(f.name, hints[f.name]), new))
    return entries


_JudgeConfigFields = dataclasses.make_dataclass("_JudgeConfigFields", _config_fields())
_JudgeConfigFields.__module__ = __name__


@dataclass
class JudgeSpec(_JudgeConfigFields):
    r"""
    A judge to load: every [`~trl_gram.judge.GramJudgeConfig`] field (same names, help and defaults; the fields a
    checkpoint preset sets default to `None`: the preset's value, else the config's default) plus the options below.
    [`~trl_gram.judge.load_judge`] loads it; [`JudgeSpec.judge_config`] builds its config.

    Parameters:
        model (`str`, *optional*):
            Judge model: a local folder or a Hub id (`None`: the embedded SmolLM2-135M-Instruct judge).
        adapter (`str`, *optional*):
            PEFT adapter put on the model (transformers backends).
        load_in_4bit (`bool`, *optional*, defaults to `False`):
            Load the model in 4-bit NF4 (bitsandbytes; transformers backends).
        dtype (`str`, *optional*, defaults to `"auto"`):
            Weights' dtype (`"auto"`, `"bfloat16"`, `"float32"`, ...).
        device (`str`, *optional*):
            Device of a transformers model (`None`: CUDA when available, else CPU); vLLM places its engine itself.
        preset (`str`, *optional*, defaults to `"auto"`):
            Released-checkpoint preset ([`~trl_gram.presets`]): `"auto"` recognises the checkpoint from its id, folder
            name or `config.json`; `"none"` applies none; or a preset name. It fills the fields left `None`, before the
            backend is chosen.
        tensor_parallel_size (`int`, *optional*, defaults to `1`):
            GPUs one vLLM engine is split over.
        gpu_memory_utilization (`float`, *optional*):
            Share of GPU memory a vLLM engine may take (`None`: the vLLM backend's default).
        max_model_len (`int`, *optional*):
            Context length of a vLLM engine (`None`: the model's).
        engine_urls (`list[str]`, *optional*, defaults to `[]`):
            Base URLs of the OpenAI-compatible engines of `backend="openai"` (e.g. `http://127.0.0.1:8001/v1`).
        served_model_name (`str`, *optional*):
            Model name the engines serve (`backend="openai"`; `None`: `model`).

    Example:

    ```python
    >>> from trl_gram.judge import JudgeSpec, load_judge
    >>> spec = JudgeSpec(mode="direct", backend="transformers")
    >>> spec.judge_config().max_new_tokens
    1024
    >>> judge = load_judge(spec)  # the embedded SmolLM2 judge
    ```
    """

    model: str | None = field(
        default=None,
        metadata={
            "help": "Judge model folder or Hub id (default: the embedded SmolLM2 judge).",
            "aliases": ["--judge_model"],
        },
    )
    adapter: str | None = field(default=None, metadata={"help": "PEFT adapter put on the judge."})
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the judge in 4-bit NF4 (bitsandbytes)."})
    dtype: str = field(default="auto", metadata={"help": "Judge dtype: auto, bfloat16, float32, ..."})
    device: str | None = field(
        default=None, metadata={"help": "Device of a transformers judge (default: CUDA when available, else CPU)."}
    )
    preset: str = field(
        default="auto",
        metadata={"help": "Checkpoint preset: auto (recognise released GRAM checkpoints), none, or a preset name."},
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs one vLLM engine is split over."})
    gpu_memory_utilization: float | None = field(
        default=None, metadata={"help": "Share of GPU memory a vLLM engine may take (default: the backend's)."}
    )
    max_model_len: int | None = field(default=None, metadata={"help": "Context length of a vLLM engine."})
    engine_urls: list[str] = field(
        default_factory=list, metadata={"help": "Base URLs of the OpenAI-compatible engines (backend=openai)."}
    )
    served_model_name: str | None = field(
        default=None, metadata={"help": "Model name the engines serve (backend=openai; default: model)."}
    )

    def __post_init__(self):
        if isinstance(self.chat_template_kwargs, str):
            from .judge import _json_dict

            self.chat_template_kwargs = _json_dict("chat_template_kwargs", self.chat_template_kwargs)
        if self.backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {BACKENDS}, got {self.backend!r}.")
        if self.preset not in ("auto", "none", None):
            from ..presets import get_preset

            get_preset(self.preset)  # an unknown name fails now, naming the choices
        for url in self.engine_urls:
            if not str(url).startswith(("http://", "https://")):
                raise ValueError(f"`engine_urls` must be http(s) base URLs, got {url!r}.")
        if self.backend == "openai" and not self.engine_urls:
            raise ValueError(
                "`backend='openai'` needs `engine_urls`, the engines' base URLs (on a command line: `--backend openai` "
                "needs `--engine_urls URL [URL ...]`)."
            )
        if self.backend != "openai" and self.engine_urls:
            raise ValueError(
                f"`engine_urls` is for `backend='openai'`, not {self.backend!r} (on a command line: `--engine_urls` is "
                "for `--backend openai`)."
            )
        if self.tensor_parallel_size < 1:
            raise ValueError(f"`tensor_parallel_size` must be >= 1, got {self.tensor_parallel_size}.")
        # the config's own checks, on the fields given (a preset field left None takes its default here)
        GramJudgeConfig(**self._given_config_fields())

    def _given_config_fields(self) -> dict:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(GramJudgeConfig)
            if not (f.name in PRESET_FIELDS and getattr(self, f.name) is None)
        }

    def resolved_preset(self):
        """The [`~trl_gram.presets.GramPreset`] that applies to `model`, or `None`."""
        from ..presets import resolve_preset

        if self.preset in (None, "none"):
            return None
        return resolve_preset(self.preset, self.model)

    def config_fields(self) -> dict:
        """The [`~trl_gram.judge.GramJudgeConfig`] fields of this spec, the checkpoint's preset filling the fields left
        `None` (a mode other than the preset's keeps that mode's default template): the same rule as
        [`~trl_gram.judge.GramJudge.from_pretrained`]'s."""
        from .judge import _with_preset

        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(GramJudgeConfig)}
        return _with_preset(None if self.preset == "none" else self.preset, self.model, None, None, fields)

    def judge_config(self) -> GramJudgeConfig:
        """The [`~trl_gram.judge.GramJudgeConfig`] this spec judges with (the checkpoint's preset applied)."""
        return GramJudgeConfig(**self.config_fields())

    def load(self, **load_options):
        """The judge ([`~trl_gram.judge.load_judge`] of this spec)."""
        from .loading import load_judge

        return load_judge(self, **load_options)

    @classmethod
    def from_prefixed(cls, args, prefix: str = "judge_") -> JudgeSpec:
        """The spec held by `args`, an instance of [`judge_arguments`] (or any object with the prefixed fields)."""
        return cls(**{f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)})

    def to_prefixed(self, prefix: str = "judge_") -> dict:
        """This spec's fields under their prefixed names (keyword arguments of [`judge_arguments`])."""
        return {prefix + f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


JUDGE_PREFIX_ALIASES = {"model": ["--judge_model_name_or_path"]}
"""Older flag names kept working on the `judge_`-prefixed arguments."""


def judge_arguments(prefix: str = "judge_", name: str = "JudgeArguments", aliases: dict | None = None) -> type:
    """A dataclass with every [`JudgeSpec`] field renamed `prefix + name` (same types, help and defaults), for a
    `TrlParser` shared with trainer fields; [`JudgeSpec.from_prefixed`] turns an instance back into the spec."""
    aliases = JUDGE_PREFIX_ALIASES if aliases is None else aliases
    entries = []
    for f in dataclasses.fields(JudgeSpec):
        metadata = dict(f.metadata)
        metadata.pop("aliases", None)
        if f.name in aliases:
            metadata["aliases"] = list(aliases[f.name])
        if f.default_factory is not dataclasses.MISSING:
            new = field(default_factory=f.default_factory, metadata=metadata)
        else:
            new = field(default=f.default, metadata=metadata)
        entries.append((prefix + f.name, _type_of(f), new))

    def spec(self) -> JudgeSpec:
        return JudgeSpec.from_prefixed(self, prefix)

    cls = dataclasses.make_dataclass(name, entries, namespace={"spec": spec})
    cls.__doc__ = f"Every [`JudgeSpec`] field prefixed `{prefix}`; `.spec()` gives the [`JudgeSpec`] back."
    return cls


def _type_of(f: dataclasses.Field):
    import typing

    hints = typing.get_type_hints(JudgeSpec)
    return hints[f.name]


def judge_default(name: str):
    """The one default of the [`JudgeSpec`] field `name` (a preset field's: the config's)."""
    for source in (GramJudgeConfig, JudgeSpec):
        if name in {f.name for f in dataclasses.fields(source)}:
            f = next(f for f in dataclasses.fields(source) if f.name == name)
            return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    raise KeyError(f"{name!r} is not a JudgeSpec field.")


def judge_field(name: str, help: str | None = None) -> dataclasses.Field:
    """A dataclass field taking the default, choices and help of the [`JudgeSpec`] field `name`, for configs that
    name a judge setting their own way (`judge_eval_swap`, `pseudo_label_votes`, ...); `help` replaces the help."""
    f = next(f for f in dataclasses.fields(JudgeSpec) if f.name == name)
    metadata = {k: v for k, v in f.metadata.items() if k != "aliases"}
    if help is not None:
        metadata["help"] = help
    if name in PRESET_FIELDS or f.default_factory is not dataclasses.MISSING:
        return field(default_factory=lambda: judge_default(name), metadata=metadata)
    return field(default=f.default, metadata=metadata)
