"""Is a model name a local path or a hub id, and can it be found? Answered before anything loads.

The rule (shared by config validation and model loading): a name is a **local path** when it starts
with `/`, `.` or `~`, when it exists, or when its first folder exists here (`runs/nope` once `runs/`
exists: a typo of a run directory, not the hub repo `runs/nope`). Anything else of the form
`org/name` is a **hub id**. Without this rule a mistyped run directory is sent to the hub and
costs ~25 s of download retries before a traceback.

A hub id that is neither in the local cache nor reachable (offline, no network, `HF_HUB_OFFLINE`)
is one `UserError`, found with one request and no retries. Importing this module never imports torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from r1kit.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PROBE_TIMEOUT_S = 10.0
# Files whose presence makes a local directory a saved model / tokenizer (either one of each tuple).
MARKERS = {"model": ("config.json", "adapter_config.json"), "tokenizer": ("tokenizer_config.json", "tokenizer.json")}


def local_path(name: str) -> Path | None:
    """The local directory `name` means, or None when it can only be a hub id.

    >>> local_path("/no/such/model"), local_path("./m"), local_path("Org/some-model") is None
    (PosixPath('/no/such/model'), PosixPath('m'), True)
    >>> local_path("plain-name")  # neither an existing path nor 'org/name': still a (missing) local path
    PosixPath('plain-name')
    """
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or path.exists() or Path(path.parts[0]).is_dir():
        return path
    return path if not HUB_ID.match(name) else None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def model_problem(name: str, hub: bool = True, kind: str = "model") -> str | None:
    """What is wrong with `name` as a model (or tokenizer) to load, in one sentence; None when it can be loaded.

    hub=False checks local paths only (a recipe linted on a machine that will not run it).
    """
    path = local_path(name)
    if path is not None:
        return _local_problem(name, path, kind)
    if not hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, MARKERS[kind][0]), str):
        return None
    if offline():
        return f"'{name}' is neither a local directory nor in the hub cache, and HF_HUB_OFFLINE is set. " \
               "Download it first or give a local path."
    return _probe_hub(name)


def _local_problem(name: str, path: Path, kind: str = "model") -> str | None:
    if path.is_dir():
        if any((path / marker).is_file() for marker in MARKERS[kind]):
            return None
        return (f"'{name}' is a directory but holds no {' or '.join(MARKERS[kind])}, so it is not a saved {kind}. "
                "Point it at a `save_pretrained` directory (e.g. one written by `r1kit build-tiny` or a finished stage).")
    first = path.parts[0] if path.parts else name
    why = f" (its first folder '{first}' exists here, so it is a local path, not a hub id)" \
        if not name.startswith(("/", ".", "~")) and Path(first).is_dir() else ""
    return (f"{kind} path '{name}' does not exist{why}. Give a local directory written by `save_pretrained` "
            "or a hub id like 'org/name'.")


def _probe_hub(name: str) -> str | None:
    """One metadata request with a short timeout: no retries, unlike a download."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi().model_info(name, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return f"hub model '{name}' is gated: accept its license on the hub and log in (`hf auth login`)."
    except RepositoryNotFoundError:
        return f"hub model '{name}' does not exist (or is private: log in with `hf auth login`). Check the name."
    except HfHubHTTPError as e:
        return f"the hub answered with an error for '{name}': {e}"
    except Exception as e:  # noqa: BLE001 -- transport failures (DNS, refused, timeout); their class is the HTTP client's
        return (f"'{name}' is neither a local directory nor in the hub cache, and the hub cannot be reached "
                f"({type(e).__name__}: {e}). Download it first or give a local path.")
    return None


def check_model(name: str, key: str = "model_name_or_path", source: str = "recipe", hub: bool = True,
                kind: str = "model") -> None:
    """Raise UserError naming the key when `name` cannot be loaded as a model (or tokenizer)."""
    problem = model_problem(name, hub=hub, kind=kind)
    if problem:
        raise UserError(f"{source}: key '{key}': {problem}")
