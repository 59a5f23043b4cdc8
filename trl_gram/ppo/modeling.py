"""The trainable module of PPO: a policy plus a value function, and how it is saved and restored.

The value function is either a scalar head on the policy's last hidden state (shared backbone: one model in memory,
and with PEFT the reference policy is the same base model with the adapter disabled, so a single-GPU LoRA/4-bit run
holds one base model), or a separate model with a `score` head (e.g. `AutoModelForSequenceClassification` with
`num_labels=1`) whose backbone is run on every token.
"""

import inspect
import os

import safetensors.torch
import torch
from torch import nn
from transformers import PreTrainedModel

VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_MODEL_DIR = "value_model"


def is_peft_model(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def base_causal_lm(policy: nn.Module) -> PreTrainedModel:
    """The `PreTrainedModel` under a possible PEFT wrapper."""
    return policy.get_base_model() if is_peft_model(policy) else policy


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding (the first real token gets position 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _value_score_head(value_model: PreTrainedModel) -> nn.Module:
    for name in ("score", "classifier", "v_head"):
        head = getattr(value_model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise ValueError(
        f"`value_model` ({type(value_model).__name__}) has no `score` head: pass an "
        "`AutoModelForSequenceClassification` with `num_labels=1`, or leave `value_model=None` to put a value head "
        "on the policy's backbone."
    )


class PolicyAndValueModel(nn.Module):
    """Policy (causal LM, possibly a `PeftModel`) and value function, trained together by one optimizer.

    `forward` returns `(logits, values)` for the last `logits_to_keep` positions (all positions if `None`): `logits`
    is `[B, K, V]` and `values` is `[B, K]` (float32).
    """

    def __init__(self, policy: nn.Module, value_model: PreTrainedModel | None = None):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        if value_model is None:
            hidden_size = base_causal_lm(policy).config.get_text_config().hidden_size
            self.value_head = nn.Linear(hidden_size, 1)
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden_size + 1) ** 0.5)
            nn.init.zeros_(self.value_head.bias)
            device = next(policy.parameters()).device
            self.value_head.to(device)
        else:
            self.value_head = None
            self._value_backbone_name = value_model.base_model_prefix
            _value_score_head(value_model)  # fail early
        forward_params = inspect.signature(base_causal_lm(policy).forward).parameters
        self._accepts_logits_to_keep = "logits_to_keep" in forward_params
        self.main_input_name = "input_ids"

    # ----- transformers.Trainer integration -----
    @property
    def config(self):
        return base_causal_lm(self.policy).config

    @property
    def generation_config(self):
        return getattr(base_causal_lm(self.policy), "generation_config", None)

    # Mirrored so that Trainer/accelerate treat a quantized (e.g. 4-bit) policy as such (no `.to(device)` on it)
    @property
    def quantization_method(self):
        return getattr(base_causal_lm(self.policy), "quantization_method", None)

    @property
    def is_loaded_in_4bit(self) -> bool:
        return bool(getattr(base_causal_lm(self.policy), "is_loaded_in_4bit", False))

    @property
    def is_loaded_in_8bit(self) -> bool:
        return bool(getattr(base_causal_lm(self.policy), "is_loaded_in_8bit", False))

    @property
    def is_activation_checkpointing(self) -> bool:
        return bool(base_causal_lm(self.policy).is_activation_checkpointing)

    is_gradient_checkpointing = is_activation_checkpointing  # name used by `trl.models.unwrap_model_for_generation`

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        models = [base_causal_lm(self.policy)] + ([self.value_model] if self.value_model is not None else [])
        for model in models:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)
        if is_peft_model(self.policy):
            # Frozen embeddings + checkpointing: the inputs must require grad for the adapters to get gradients
            self.policy.enable_input_require_grads()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs):
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def activation_checkpointing_disable(self):
        base_causal_lm(self.policy).activation_checkpointing_disable()
        if self.value_model is not None:
            self.value_model.activation_checkpointing_disable()

    gradient_checkpointing_disable = activation_checkpointing_disable

    # ----- forward -----
    def policy_logits(self, input_ids, attention_mask, logits_to_keep: int | None = None, output_hidden_states=False):
        kwargs = {}
        if logits_to_keep is not None and self._accepts_logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep + 1  # +1: `forward` drops the last position
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        logits = out.logits
        if logits_to_keep is not None:
            logits = logits[:, -(logits_to_keep + 1) :]
        return logits, out

    def values(self, input_ids, attention_mask, hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """Per-position values `[B, L]` (float32); `hidden_states` is the policy's last hidden state if shared."""
        if self.value_head is not None:
            if hidden_states is None:
                _, out = self.policy_logits(input_ids, attention_mask, logits_to_keep=1, output_hidden_states=True)
                hidden_states = out.hidden_states[-1]
            head_dtype = self.value_head.weight.dtype
            return self.value_head(hidden_states.to(head_dtype)).squeeze(-1).float()
        backbone = getattr(self.value_model, self._value_backbone_name)
        out = backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        head = _value_score_head(self.value_model)
        return head(hidden.to(head.weight.dtype)).squeeze(-1).float()

    def forward(self, input_ids, attention_mask, logits_to_keep: int | None = None):
        """Logits that predict the last `logits_to_keep` tokens (`[B, K, V]`) and the values of the states before
        them (`[B, K]`)."""
        shared = self.value_head is not None
        logits, out = self.policy_logits(input_ids, attention_mask, logits_to_keep, output_hidden_states=shared)
        values = self.values(input_ids, attention_mask, out.hidden_states[-1] if shared else None)
        if logits_to_keep is not None:
            logits = logits[:, :-1]
            values = values[:, -(logits_to_keep + 1) : -1]
        return logits, values

    # ----- saving -----
    def save(self, output_dir: str, state_dict: dict[str, torch.Tensor] | None = None, safe_serialization=True):
        """Save the policy with `save_pretrained` (adapter only for PEFT) in `output_dir`, and the value function
        beside it (`value_head.safetensors`, or a `value_model/` folder). `state_dict` is this module's full state dict
        when it must come from elsewhere (DeepSpeed/FSDP)."""
        os.makedirs(output_dir, exist_ok=True)
        policy_sd = value_sd = None
        if state_dict is not None:
            policy_sd = {k[len("policy.") :]: v for k, v in state_dict.items() if k.startswith("policy.")}
            prefix = "value_head." if self.value_head is not None else "value_model."
            value_sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        self.policy.save_pretrained(output_dir, state_dict=policy_sd)
        if self.value_head is not None:
            value_sd = value_sd if value_sd is not None else self.value_head.state_dict()
            tensors = {k: v.detach().cpu().contiguous() for k, v in value_sd.items()}
            safetensors.torch.save_file(tensors, os.path.join(output_dir, VALUE_HEAD_FILE), metadata={"format": "pt"})
        else:
            self.value_model.save_pretrained(os.path.join(output_dir, VALUE_MODEL_DIR), state_dict=value_sd)

    def load(self, checkpoint_dir: str) -> None:
        """Restore the weights written by `save` (used to resume training)."""
        if is_peft_model(self.policy):
            from peft import set_peft_model_state_dict
            from peft.utils import load_peft_weights

            for adapter_name in self.policy.peft_config:
                subdir = checkpoint_dir if adapter_name == "default" else os.path.join(checkpoint_dir, adapter_name)
                weights = load_peft_weights(subdir, device=str(next(self.policy.parameters()).device))
                set_peft_model_state_dict(self.policy, weights, adapter_name=adapter_name)
        else:
            _load_pretrained_weights(self.policy, checkpoint_dir)
        if self.value_head is not None:
            path = os.path.join(checkpoint_dir, VALUE_HEAD_FILE)
            if not os.path.isfile(path):
                raise ValueError(f"Checkpoint {checkpoint_dir!r} has no {VALUE_HEAD_FILE}: it was not saved by PPO.")
            self.value_head.load_state_dict(
                safetensors.torch.load_file(path, device=str(self.value_head.weight.device))
            )
        else:
            _load_pretrained_weights(self.value_model, os.path.join(checkpoint_dir, VALUE_MODEL_DIR))


def _load_pretrained_weights(model: PreTrainedModel, folder: str) -> None:
    from transformers.trainer_utils import load_sharded_checkpoint

    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        state = safetensors.torch.load_file(single, device="cpu")
        missing, unexpected = model.load_state_dict(state, strict=False)
        # `save_pretrained` drops tied copies (e.g. `lm_head.weight`): those are filled through the tensor they share
        names_by_param: dict[int, set[str]] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            names_by_param.setdefault(id(param), set()).add(name)
        loaded = set(state)
        missing = [k for k in missing if not any(names & loaded for names in names_by_param.values() if k in names)]
        if missing or unexpected:
            raise ValueError(
                f"Checkpoint {folder!r} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}."
            )
    elif os.path.isfile(os.path.join(folder, "model.safetensors.index.json")):
        load_sharded_checkpoint(model, folder, strict=False)
    else:
        raise ValueError(f"No model weights (model.safetensors) found in checkpoint folder {folder!r}.")
