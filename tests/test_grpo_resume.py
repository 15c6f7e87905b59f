"""A run killed with SIGKILL resumes from its last checkpoint and ends exactly where an uninterrupted
run ends: same weights, same optimizer state (sampling RNG and data position are restored too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from rl.grpo import main
from tests.test_grpo_loop import letter_share_reward  # noqa: F401  (autouse fixture: the test reward, per test)

STEPS = 4  # kill once checkpoint-2 exists; the resumed run still has steps left to take


def argv(tiny_dir: Path, out: Path) -> list[str]:
    return ["--model_name_or_path", str(tiny_dir / "policy"), "--dataset_name", "synthetic:arithmetic",
            "--output_dir", str(out), "--max_samples", "64", "--num_generations", "4",
            "--per_device_train_batch_size", "8", "--max_completion_length", "12", "--max_steps", str(STEPS),
            "--learning_rate", "1e-3", "--save_steps", "1", "--save_total_limit", "null", "--use_cpu", "true",
            "--rewards", "[{name: accuracy}, {name: test_letter_share}]", "--resume_from_checkpoint", "auto"]


def launch(tiny_dir: Path, out: Path) -> subprocess.Popen:
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    return subprocess.Popen([sys.executable, __file__, *argv(tiny_dir, out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def state_tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    opt = torch.load(ckpt / "state" / "optimizer.bin", weights_only=False)["state"]
    flat = {f"opt.{k}.{n}": v for k, s in opt.items() for n, v in s.items() if torch.is_tensor(v)}
    return {**flat, **{f"model.{k}": v for k, v in load_file(ckpt / "model" / "model.safetensors").items()}}


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_dir, tmp_path):
    killed_dir = tmp_path / "killed"
    victim = launch(tiny_dir, killed_dir)
    deadline = time.monotonic() + 240
    while not (killed_dir / "checkpoint-2").exists():
        assert victim.poll() is None, "run ended before it could be killed: " + victim.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint-2 within 240 s"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_dir / f"checkpoint-{STEPS}").exists()
    last = max(int(p.name.split("-")[1]) for p in killed_dir.glob("checkpoint-*"))

    resumed = launch(tiny_dir, killed_dir)
    main(argv(tiny_dir, tmp_path / "ref"))  # the uninterrupted run, in this process while the other resumes
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert f"at step {last}" in out

    a, b = state_tensors(tmp_path / "ref" / f"checkpoint-{STEPS}"), state_tensors(killed_dir / f"checkpoint-{STEPS}")
    first = state_tensors(tmp_path / "ref" / "checkpoint-1")
    assert a.keys() == b.keys()
    assert any(not torch.equal(first[k], a[k]) for k in a if k.startswith("model.")), "weights never moved"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_grpo_loop import letter_share

    from rewards.registry import register

    register("test_letter_share")(letter_share)  # this child process only

    main(sys.argv[1:])
