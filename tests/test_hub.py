"""Model names: local path or hub id, and a clear one-line error (exit 2) for each way they go wrong."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest

from r1kit.errors import UserError
from r1kit.hub import check_model, local_path, model_problem

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """cwd = tmp_path with a `runs/` folder and one saved-model directory `runs/ok` (config.json only)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "ok").mkdir(parents=True)
    (tmp_path / "runs" / "ok" / "config.json").write_text("{}")
    (tmp_path / "runs" / "empty").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("name,local", [
    ("runs/nope", True),          # first folder exists here: a typo of a run directory, not a hub repo
    ("runs/ok", True),
    ("./x/y", True), ("../x", True), ("/abs/m", True), ("~/m", True),
    ("bare-name", True),           # not 'org/name', so it cannot be a hub id
    ("Qwen/Qwen2.5-Math-7B", False),
    ("nosuchorg/model", False),
])
def test_local_or_hub(in_tmp, name, local):
    assert (local_path(name) is not None) is local


@pytest.mark.parametrize("name,pattern", [
    ("runs/nope", r"model path 'runs/nope' does not exist \(its first folder 'runs' exists here"),
    ("./runs/nope", r"model path './runs/nope' does not exist\. Give"),
    ("runs/empty", r"'runs/empty' is a directory but holds no config.json or adapter_config.json"),
    ("bare-name", r"model path 'bare-name' does not exist\. Give"),
])
def test_local_problems(in_tmp, name, pattern):
    with pytest.raises(UserError, match=r"r\.yaml: key 'model_name_or_path': " + pattern):
        check_model(name, source="r.yaml")


def test_tokenizer_paths(in_tmp):
    (in_tmp / "runs" / "tok").mkdir()
    (in_tmp / "runs" / "tok" / "tokenizer_config.json").write_text("{}")
    assert model_problem("runs/tok", kind="tokenizer") is None  # a tokenizer folder has no config.json
    assert "holds no tokenizer_config.json or tokenizer.json" in model_problem("runs/ok", kind="tokenizer")
    assert model_problem("runs/tokk", kind="tokenizer").startswith("tokenizer path 'runs/tokk' does not exist")


def test_local_model_and_hub_off(in_tmp):
    assert model_problem("runs/ok") is None
    assert model_problem("org/model", hub=False) is None  # linting a real-scale recipe offline
    assert "does not exist" in model_problem("runs/nope", hub=False)


def test_offline_hub_id(in_tmp, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE is set" in model_problem("org/model")


class FakeHub(BaseHTTPRequestHandler):
    """Answers model_info like the hub: 200 for org/model, 404 RepoNotFound otherwise."""

    def do_GET(self):
        if self.path.startswith("/api/models/org/model"):
            body, code, headers = json.dumps({"id": "org/model", "sha": "0" * 40}).encode(), 200, {}
        else:
            body, code, headers = b'{"error": "Repository not found"}', 404, {"X-Error-Code": "RepoNotFound"}
        self.send_response(code)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield
    server.shutdown()
    server.server_close()


def test_reachable_hub(in_tmp, fake_hub):
    assert model_problem("org/model") is None
    assert "does not exist (or is private" in model_problem("org/missing")


def test_unreachable_hub_is_one_fast_error(in_tmp, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.monotonic()
    problem = model_problem("org/model")
    assert "the hub cannot be reached" in problem and "Download it first or give a local path" in problem
    assert time.monotonic() - t0 < 5, "no download retries"


@pytest.mark.parametrize("stage", ["grpo", "pretrain"])
def test_cli_typo_of_run_dir_exits_2_at_once(in_tmp, stage):
    """The issue's case: `r1kit grpo ... --model_name_or_path runs/nope` once runs/ exists."""
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "r1kit.cli", stage, "--config", str(ROOT / f"recipes/tiny/{stage}.yaml"),
           "--model_name_or_path", "runs/nope"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                       env={"PATH": "/usr/bin:/bin", "HF_ENDPOINT": "http://127.0.0.1:9", "HOME": str(in_tmp)})
    assert r.returncode == 2, r.stderr
    assert "key 'model_name_or_path'" in r.stderr and "runs/nope" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 60
