"""Every training recipe names only fields that the trl-gram train / self-train parsers know."""

from pathlib import Path

import pytest
import yaml
from trl import ModelConfig, TrlParser

from trl_gram.training.cli import SelfTrainScriptArguments, TrainScriptArguments
from trl_gram.training.config import GramRewardConfig
from trl_gram.training.self_training import SelfTrainingConfig

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("gram_*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_fields_are_known(path):
    config = yaml.safe_load(path.read_text())
    config.pop("env", None)
    if "labeled_data" in config:
        types = (SelfTrainScriptArguments, SelfTrainingConfig, GramRewardConfig, ModelConfig)
    else:
        types = (TrainScriptArguments, GramRewardConfig, ModelConfig)
    assert TrlParser(types).set_defaults_with_config(**config) == []
    if "template" in config and config["template"].endswith(".txt"):
        assert (path.parent.parent / config["template"]).is_file()


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {
        "gram_r2_cpu_smoke.yaml",
        "gram_r2_llama31_8b.yaml",
        "gram_r2_llama32_3b.yaml",
        "gram_r2_qlora_single_gpu.yaml",
        "gram_v1_pretrain.yaml",
        "gram_v1_finetune.yaml",
    } <= names
