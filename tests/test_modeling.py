"""r1kit/modeling/loading.py and r1kit.checkpoint.save_model: local paths, dtypes, the adapter-aware atomic save."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from r1kit.checkpoint import save_model
from r1kit.errors import UserError
from r1kit.modeling.loading import load_model, load_tokenizer, local_path
from r1kit.modeling.lora import ROUTER_BIAS_FILE, apply_lora
from r1kit.modeling.moe import find_routers

pytestmark = pytest.mark.usefixtures("few_threads")


@pytest.mark.parametrize("name,local", [
    ("Qwen/Qwen3-0.6B", False),
    ("/abs/missing", True),
    ("./rel/missing", True),
    ("~/missing-model", True),
    ("tests/no-such-model", True),  # `tests/` exists here: a typo below it is a local path, not a hub id
])
def test_local_path_or_hub_id(name, local, monkeypatch):
    monkeypatch.chdir(__file__.rsplit("/tests/", 1)[0])
    assert (local_path(name) is not None) is local


@pytest.mark.parametrize("name", ["tests/no-such-model", "tests"])
def test_a_local_path_that_does_not_load_is_a_user_error_not_a_hub_lookup(name, monkeypatch):
    monkeypatch.chdir(__file__.rsplit("/tests/", 1)[0])
    with pytest.raises(UserError, match="local path|saved model"):
        load_model(name)
    with pytest.raises(UserError):
        load_tokenizer(name)


def test_loads_local_model_in_the_asked_dtype(tiny_dir):
    assert next(load_model(str(tiny_dir / "student")).parameters()).dtype == torch.float32  # auto on CPU
    assert next(load_model(str(tiny_dir / "student"), dtype="bfloat16").parameters()).dtype == torch.bfloat16


def test_lora_save_keeps_router_biases_and_load_restores_them(tiny_dir, tmp_path):
    acc = Accelerator(cpu=True)
    model = apply_lora(load_model(str(tiny_dir / "policy")), 4, 8, 0.0, ["all-linear"])
    routers = find_routers(model)
    for i, router in enumerate(routers.values()):
        router.e_score_correction_bias.copy_(torch.linspace(-1, 1, router.e_score_correction_bias.numel()) * (i + 1))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.jsonl").write_text("{}\n")  # an output_dir holds other files: kept
    save_model(acc, model, load_tokenizer(str(tiny_dir / "policy")), tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", ROUTER_BIAS_FILE, "metrics.jsonl"} <= names
    assert not any(n.startswith(".tmp") for n in names) and "config.json" not in names
    loaded = load_model(str(tmp_path / "out"))
    for layer, router in find_routers(loaded).items():
        assert torch.equal(router.e_score_correction_bias, routers[layer].e_score_correction_bias)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-5)


def test_full_model_save_replaces_an_adapter_save(tiny_dir, tmp_path):
    acc = Accelerator(cpu=True)
    tok = load_tokenizer(str(tiny_dir / "student"))
    save_model(acc, apply_lora(load_model(str(tiny_dir / "student")), 4, 8, 0.0, ["all-linear"]), tok, tmp_path)
    save_model(acc, load_model(str(tiny_dir / "student")), tok, tmp_path)
    assert (tmp_path / "config.json").is_file() and not (tmp_path / "adapter_config.json").exists()
    load_model(str(tmp_path))
