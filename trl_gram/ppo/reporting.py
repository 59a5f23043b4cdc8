"""What PPO reports: rollout and update metrics (averaged over processes and over each logging interval), the metrics
and table columns that reward functions send through `log_metric`/`log_extra`, and the completions table (console,
parquet, wandb/trackio)."""

import json
import math
import os
from collections import defaultdict

import pandas as pd
import torch
from accelerate.utils import gather_object
from transformers.utils import is_rich_available
from trl.trainer.utils import nanstd, print_prompt_completions_sample

from . import core


class PPOReporter:
    """Collects metrics and completion rows between two `Trainer.log` calls.

    Every method that gathers must be called on all processes; only `pop_metrics` and `flush_table` are local.
    """

    def __init__(self, accelerator, reward_names: list[str], kl_coef: float, log_completions: bool):
        self.accelerator = accelerator
        self.reward_names = reward_names
        self.kl_coef = kl_coef
        self.log_completions = log_completions
        self.metrics = defaultdict(list)
        self.table = defaultdict(list)
        self.pending_extra = defaultdict(list)
        self.pending_metrics = defaultdict(list)

    # Callbacks handed to the reward functions (`log_extra=`, `log_metric=`)
    def log_extra(self, column: str, values: list) -> None:
        self.pending_extra[column].extend(values)

    def log_metric(self, name: str, value: float) -> None:
        self.pending_metrics[name].append(float(value))

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor, reduction="sum") if self.accelerator.num_processes > 1 else tensor

    def _masked_mean(self, x, mask) -> float:
        return core.masked_mean_var(x, mask, reduce=self.reduce_sum)[0].item()

    def record_rollout(self, rollout: dict, text: dict) -> None:
        """Rollout metrics. `rollout` holds `[B]`/`[B, T]` tensors (see `GramPPOTrainer._make_rollout`), `text` the
        prompts, completions and (greedy) references."""
        gather, m = self.accelerator.gather, self.metrics
        rewards = gather(rollout["rewards_per_func"])
        for i, name in enumerate(self.reward_names):
            m[f"rewards/{name}/mean"].append(torch.nanmean(rewards[:, i]).item())
            m[f"rewards/{name}/std"].append(nanstd(rewards[:, i]).item())
            m[f"rewards/{name}/none_frac"].append(torch.isnan(rewards[:, i]).float().mean().item())
        valid = gather(rollout["valid"].long()).bool()
        raw = gather(rollout["raw_scores"])[valid]
        scores = gather(rollout["scores"])
        m["reward"].append(raw.mean().item() if len(raw) else math.nan)
        m["reward_std"].append(raw.std().item() if len(raw) > 1 else 0.0)
        m["score"].append(scores[valid].mean().item() if valid.any() else math.nan)
        m["frac_unscored"].append(1.0 - valid.float().mean().item())
        mask, loss_mask = rollout["mask"], rollout["loss_mask"]
        lengths = gather(mask.sum(1).float())
        m["completions/mean_length"].append(lengths.mean().item())
        m["completions/max_length"].append(lengths.max().item())
        m["completions/frac_missing_eos"].append(1.0 - gather(rollout["has_eos"].float()).mean().item())
        seq_kl = gather(rollout["kl"].sum(1))
        m["kl"].append(seq_kl.mean().item())
        m["non_score_reward"].append(-self.kl_coef * seq_kl.mean().item())
        m["entropy"].append(self._masked_mean(rollout["entropy"], mask))
        m["value/mean"].append(self._masked_mean(rollout["old_values"], loss_mask))
        m["value/returns_mean"].append(self._masked_mean(rollout["returns"], loss_mask))
        ev = core.explained_variance(rollout["old_values"], rollout["returns"], loss_mask, self.reduce_sum)
        m["value/explained_variance"].append(ev.item())
        # Metrics sent by the reward functions, averaged over processes (keys sorted: same gather order everywhere)
        for name in sorted(set(gather_object(list(self.pending_metrics)))):
            values = self.pending_metrics.get(name, [])
            stats = torch.tensor([sum(values), len(values)], dtype=torch.float32, device=self.accelerator.device)
            total, count = self.reduce_sum(stats).tolist()
            m[name].append(total / count if count else math.nan)
        self.pending_metrics.clear()

        if self.log_completions:
            t = self.table
            t["prompt"].extend(gather_object(text["prompts"]))
            t["completion"].extend(gather_object(text["completions"]))
            if text.get("references") is not None:
                t["reference"].extend(gather_object(text["references"]))
            for i, name in enumerate(self.reward_names):
                t[f"reward:{name}"].extend(rewards[:, i].tolist())
            t["score"].extend(scores.tolist())
            t["advantage"].extend(gather(core.masked_mean(rollout["advantages"], loss_mask, dim=1)).tolist())
            for column in sorted(set(gather_object(list(self.pending_extra)))):
                default = [None] * len(text["prompts"])
                t[f"extra:{column}"].extend(gather_object(self.pending_extra.get(column, default)))
        self.pending_extra.clear()

    def record_update(self, stats: dict[str, torch.Tensor]) -> None:
        """Per-micro-batch update statistics (scalars), averaged over processes."""
        names = sorted(stats)
        values = torch.stack([stats[k].detach().float() for k in names]).unsqueeze(0)
        for name, value in zip(names, self.accelerator.gather(values).mean(0).tolist()):
            self.metrics[name].append(value)

    def pop_metrics(self) -> dict[str, float | None]:
        out = {}
        for key, values in self.metrics.items():
            finite = [v for v in values if not math.isnan(v)]
            out[key] = sum(finite) / len(finite) if finite else None
        self.metrics.clear()
        return out

    def flush_table(self, step: int, output_dir: str, num_to_print: int | None, report_to: list[str]) -> None:
        """Print (rich), save (parquet) and report (wandb/trackio) the completions collected since the last call.
        Call on the main process only."""
        table = dict(self.table)
        self.table.clear()
        if not table.get("prompt"):
            return
        rewards = {k.split(":", 1)[1]: v for k, v in table.items() if k.startswith("reward:")}
        rewards["score"] = table["score"]
        extra = {k.split(":", 1)[1]: v for k, v in table.items() if k.startswith("extra:")}
        if "reference" in table:
            extra = {"reference": table["reference"], **extra}
        if is_rich_available():
            print_prompt_completions_sample(
                table["prompt"], table["completion"], rewards, table["advantage"], step, num_to_print, extra=extra
            )
        frame = pd.DataFrame({"step": [step] * len(table["prompt"]), **table})
        frame = frame.map(lambda x: x if isinstance(x, (int, float, str, type(None))) else json.dumps(x, default=str))
        folder = os.path.join(output_dir, "completions")
        os.makedirs(folder, exist_ok=True)
        frame.to_parquet(os.path.join(folder, f"completions_{step:05d}.parquet"))
        if "wandb" in report_to:
            import wandb

            if wandb.run is not None:
                wandb.log({"completions": wandb.Table(dataframe=frame)})
        if "trackio" in report_to:
            import trackio

            trackio.log({"completions": trackio.Table(dataframe=frame)})
