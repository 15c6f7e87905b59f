"""Shared fixtures: the benchmark data dir and tiny models built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    env = os.environ.get("R1KIT_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Public benchmark files (../shared/data or $R1KIT_DATA_DIR); tests needing them skip if absent."""
    d = _data_dir()
    if not d.is_dir():
        pytest.skip(f"benchmark data dir {d} not found (set R1KIT_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """`r1kit build-tiny` output (tokenizer, MoE policy, dense student), untrained, built once."""
    from r1kit.tiny import build_tiny

    out = tmp_path_factory.mktemp("tiny")
    build_tiny(out, seed=0)
    return out


def pytest_configure(config):
    # Benchmarks load offline in tests: point the registry at the shared data dir unless set.
    os.environ.setdefault("R1KIT_DATA_DIR", str(_data_dir()))


@pytest.fixture(scope="module")
def few_threads():
    """At most 2 torch threads for a module: tiny models gain nothing from more on a shared box."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(min(2, previous))
    yield
    torch.set_num_threads(previous)
