"""Recipe loading and validation: every kind of user error names the file and key, exits 2."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import pytest

from r1kit.config import arg, load_config, parse_config, parse_overrides
from r1kit.configs import DataConfig, ModelConfig, TrainConfig
from r1kit.errors import UserError


@dataclass(kw_only=True)
class Reward:
    name: str = arg(help="reward name")
    weight: float = arg(1.0, "weight", ge=0)


@dataclass(kw_only=True)
class DemoConfig(ModelConfig, DataConfig, TrainConfig):
    num_generations: int = arg(8, "G", ge=2)
    loss_type: Literal["grpo", "dapo"] = arg("grpo", "loss")
    rewards: list[Reward] = arg([], "rewards")
    temperature: float = arg(1.0, "sampling temperature", gt=0)

    def validate(self):
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                f"num_generations ({self.num_generations})."
            )


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


@pytest.fixture
def recipe(tmp_path, model_dir):
    def write(text: str):
        p = tmp_path / "r.yaml"
        p.write_text(f"model_name_or_path: {model_dir}\ndataset_name: synthetic:arithmetic\noutput_dir: {tmp_path}/out\n" + text)
        return p

    return write


def test_valid_recipe_types_and_defaults(recipe):
    cfg = load_config(DemoConfig, recipe("learning_rate: 1e-5\nrewards:\n  - name: accuracy\n  - {name: format, weight: 0.5}\n"))
    assert cfg.learning_rate == 1e-5 and isinstance(cfg.learning_rate, float)  # YAML reads 1e-5 as str
    assert cfg.rewards[1].name == "format" and cfg.rewards[1].weight == 0.5
    assert cfg.num_generations == 8 and cfg.report_to == []


def test_unknown_key_suggests(recipe):
    with pytest.raises(UserError, match=r"unknown key 'learnin_rate'.*Did you mean 'learning_rate'") as e:
        load_config(DemoConfig, recipe("learnin_rate: 1e-5\n"))
    assert "r.yaml" in str(e.value)


def test_wrong_type(recipe):
    with pytest.raises(UserError, match=r"key 'num_generations' has value 'eight'.*expected int"):
        load_config(DemoConfig, recipe("num_generations: eight\n"))
    with pytest.raises(UserError, match=r"key 'use_cpu'.*expected bool"):
        load_config(DemoConfig, recipe("use_cpu: 3\n"))


def test_missing_required(tmp_path, model_dir):
    p = tmp_path / "r.yaml"
    p.write_text(f"model_name_or_path: {model_dir}\noutput_dir: out\n")
    with pytest.raises(UserError, match=r"r.yaml: missing required key 'dataset_name'"):
        load_config(DemoConfig, p)


def test_out_of_range_and_choices(recipe):
    with pytest.raises(UserError, match=r"key 'num_generations' is 1 but must be at least 2"):
        load_config(DemoConfig, recipe("num_generations: 1\n"))
    with pytest.raises(UserError, match=r"key 'loss_type'.*expected 'grpo' \| 'dapo'"):
        load_config(DemoConfig, recipe("loss_type: ppo\n"))
    with pytest.raises(UserError, match=r"key 'report_to' is 'tensorbord'; allowed"):
        load_config(DemoConfig, recipe("report_to: [tensorbord]\n"))
    with pytest.raises(UserError, match=r"key 'rewards\[0\].weight' is -1.0 but must be at least 0"):
        load_config(DemoConfig, recipe("rewards: [{name: a, weight: -1}]\n"))


def test_missing_model_path(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model_name_or_path: ./nope/model\ndataset_name: x\noutput_dir: out\n")
    with pytest.raises(UserError, match=r"model path './nope/model' does not exist"):
        load_config(DemoConfig, p)
    (tmp_path / "empty").mkdir()
    p.write_text(f"model_name_or_path: {tmp_path}/empty\ndataset_name: x\noutput_dir: out\n")
    with pytest.raises(UserError, match=r"holds no config.json"):
        load_config(DemoConfig, p)


def test_hub_id_accepted_unless_offline(tmp_path, monkeypatch):
    p = tmp_path / "r.yaml"
    p.write_text("model_name_or_path: some-org/some-model\ndataset_name: x\noutput_dir: out\n")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # A hub id is looked up on the hub (tests/test_hub.py); "local" checks local paths only.
    assert load_config(DemoConfig, p, check_paths="local").model_name_or_path == "some-org/some-model"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        load_config(DemoConfig, p)


def test_cross_field_validation_names_file(recipe):
    with pytest.raises(UserError, match=r"r.yaml: per_device_train_batch_size \(6\) must be a multiple"):
        load_config(DemoConfig, recipe("per_device_train_batch_size: 6\nnum_generations: 4\n"))


def test_overrides_and_dotted_keys(recipe):
    p = recipe("rewards:\n  - name: accuracy\n")
    cfg = parse_config(DemoConfig, ["--config", str(p), "--learning_rate", "3e-4", "--rewards.0.weight=2",
                                    "--use_cpu", "--report_to", "tensorboard,wandb"])
    assert cfg.learning_rate == 3e-4 and cfg.rewards[0].weight == 2.0 and cfg.use_cpu is True
    assert cfg.report_to == ["tensorboard", "wandb"]
    with pytest.raises(UserError, match=r"unknown key 'lr'"):
        parse_config(DemoConfig, ["--config", str(p), "--lr", "1"])
    with pytest.raises(UserError, match=r"not an index"):
        parse_config(DemoConfig, ["--config", str(p), "--rewards.5.weight", "1"])


def test_parse_overrides_reads_yaml_scalars():
    assert parse_overrides(["--a", "3", "--b=null", "--c", "[1, 2]", "--flag"]) == [
        ("a", 3), ("b", None), ("c", [1, 2]), ("flag", True)
    ]
    with pytest.raises(UserError, match="unexpected argument 'oops'"):
        parse_overrides(["oops"])


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(DemoConfig, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(DemoConfig, bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_config(DemoConfig, bad)


def test_cli_misspelled_key_exits_2_without_traceback(tmp_path):
    """The whole path a user takes: `r1kit grpo --config bad.yaml` prints one line and exits 2."""
    p = tmp_path / "bad.yaml"
    p.write_text("model_name_or_path: org/model\ndataset_name: synthetic:arithmetic\noutput_dir: out\nlearnig_rate: 1e-5\n")
    out = subprocess.run([sys.executable, "-m", "r1kit.cli", "grpo", "--config", str(p)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "learnig_rate" in out.stderr and "learning_rate" in out.stderr and "bad.yaml" in out.stderr
    assert "Traceback" not in out.stderr
