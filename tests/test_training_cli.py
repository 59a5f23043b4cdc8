"""The ``trl-gram`` console script: train / self-train / eval on a tiny model folder, YAML configs, the command
table."""

import importlib
import json
import sys

import pytest
import yaml
from training_utils import make_model, make_tokenizer, rule_rows

from trl_gram import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tok = make_tokenizer()
    make_model(tok).save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    with open(root / "train.jsonl", "w") as f:
        for row in rule_rows(24, 1, with_rationale=True):
            f.write(json.dumps(row) + "\n")
    with open(root / "eval.json", "w") as f:
        json.dump([{**r, "subset": "odd" if i % 2 else "even"} for i, r in enumerate(rule_rows(6, 2))], f)
    return root


COMMON = [
    "--use_cpu",
    "--bf16",
    "false",
    "--report_to",
    "none",
    "--gradient_checkpointing",
    "false",
    "--save_strategy",
    "no",
    "--disable_tqdm",
    "true",
    "--per_device_train_batch_size",
    "4",
]


def _train(files, out, *extra):
    return cli.main(
        [
            "train",
            "--model_name_or_path",
            str(files / "tiny"),
            "--dataset_name",
            str(files / "train.jsonl"),
            "--mode",
            "direct",
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--max_length",
            "1024",
            *COMMON,
            *extra,
        ]
    )


def test_train_then_eval(files, tmp_path, capsys):
    out = tmp_path / "judge"
    rc = _train(files, out)
    assert rc == 0 and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    report = tmp_path / "metrics.json"
    rc = cli.main(
        [
            "eval",
            "--judge_model",
            str(out),
            "--data",
            str(files / "eval.json"),
            "--mode",
            "direct",
            "--output_json",
            str(report),
        ]
    )
    assert rc == 0
    doc = json.loads(report.read_text())[str(files / "eval.json")]
    assert doc["comparisons"] == 6 and doc["subsets"]["even"]["num_pairs"] == 3
    assert {"accuracy", "swap_agreement", "parse_failure_rate"} <= set(doc["metrics"]) and doc["skipped"] == {}
    assert "accuracy" in capsys.readouterr().out


def test_train_goes_on_from_an_adapter(files, tmp_path):
    import torch
    from safetensors.torch import load_file

    lr = ("--learning_rate", "1e-2")  # a visible step for the LoRA weights
    first = tmp_path / "first"
    assert _train(files, first, *lr, "--use_peft", "--lora_target_modules", "q_proj", "v_proj") == 0
    second = tmp_path / "second"
    assert _train(files, second, *lr, "--init_adapter", str(first)) == 0
    before, after = load_file(first / "adapter_model.safetensors"), load_file(second / "adapter_model.safetensors")
    # the same LoRA (its own target modules, not a new adapter), trained further
    assert before.keys() == after.keys() and all("q_proj" in k or "v_proj" in k for k in after)
    assert (
        json.loads((second / "adapter_config.json").read_text())["r"]
        == json.loads((first / "adapter_config.json").read_text())["r"]
    )
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="init_adapter.*use_peft"):
        _train(files, tmp_path / "third", "--init_adapter", str(first), "--use_peft")
    with pytest.raises(ValueError, match="not a LoRA adapter folder"):
        _train(files, tmp_path / "fourth", "--init_adapter", str(files / "tiny"))


def test_yaml_config_and_self_train(files, tmp_path):
    config = {
        "model_name_or_path": str(files / "tiny"),
        "labeled_data": str(files / "train.jsonl"),
        "labeled_select": "0:16",
        "unlabeled_data": str(files / "train.jsonl"),
        "unlabeled_select": "16:24",
        "eval_data": str(files / "eval.json"),
        "mode": "direct",
        "rounds": 1,
        "output_dir": str(tmp_path / "st"),
        "max_steps": 1,
        "max_length": 1024,
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "gradient_checkpointing": False,
        "save_strategy": "no",
        "per_device_train_batch_size": 4,
        "confidence_threshold": 0.0,
        "plot": False,
    }
    path = tmp_path / "st.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["self-train", "--config", str(path)]) == 0
    summaries = [json.loads(line) for line in (tmp_path / "st" / "summary.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in summaries] == ["base", "initial", "self-train"]
    assert summaries[2]["candidates"] == 8 and summaries[1]["train_rows"] == 16


def test_train_help_and_missing_data(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0 and "--label_smoothing_epsilon" in capsys.readouterr().out
    with pytest.raises(ValueError, match="dataset_name"):
        cli.main(["train", "--output_dir", "x", "--use_cpu"])
    assert cli.main([]) == 0


def test_command_table_help_and_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("train", "self-train", "eval", "serve")) and "reproduce" not in out
    assert cli.main(["reproduce", "--config", "x.yaml"]) == 2
    assert "unknown command 'reproduce'" in capsys.readouterr().err
    for name, command in cli.COMMANDS.items():  # every entry names a real handler
        assert callable(getattr(importlib.import_module(command.module), command.handler)), name


def test_serve_names_its_extra_when_fastapi_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # `import fastapi` raises ModuleNotFoundError
    with pytest.raises(SystemExit, match=r"pip install 'trl-gram\[serve\]'"):
        cli.main(["serve", "--port", "9001"])
