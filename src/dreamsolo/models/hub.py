"""A hub model that cannot be had: one line naming the hub id and revision, and how to load it locally.

diffusers wraps huggingface_hub's errors in its own OSError (and the transport's: requests or httpx),
so the reason is found by walking the exception chain. Classes are matched by name in each MRO: the
transport library and its version (requests, httpx, httpx2) change, the names stay.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# the hub answered: this id or revision does not exist (or is private)
NOT_FOUND = ("RevisionNotFoundError", "RepositoryNotFoundError")
GATED = "GatedRepoError"  # a RepositoryNotFoundError: exists, but needs accepted terms and a token
# the hub could not be asked, and the files are not in the local cache
UNREACHABLE = ("OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectionError", "ConnectError",
               "ConnectTimeout", "TimeoutException", "Timeout", "TimeoutError", "NetworkError", "ProxyError",
               "gaierror")


class HubModelUnavailable(FileNotFoundError):
    """A preset's hub model could not be loaded; the stage prints the message as one line."""


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _first(err: BaseException, names: tuple[str, ...]) -> BaseException | None:
    """The first error in the chain that is an instance of a class named in `names`."""
    for e in _chain(err):
        if any(k.__name__ in names for k in type(e).__mro__):
            return e
    return None


def _reason(e: BaseException) -> str:
    if type(e).__name__ == "OfflineModeIsEnabled":  # its own text is a long URL; this is what to know
        return "offline mode: HF_HUB_OFFLINE is set"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def explain(err: BaseException, repo: str, revision: str | None, where: str) -> HubModelUnavailable | None:
    """The one-line error for a failed hub load, or None when `err` is not about reaching the model."""
    at = f"{repo} at revision {revision or 'main'}"
    local = (f"or set {where}.source to a local diffusers folder (holding model_index.json) or a single-file "
             "Stable Diffusion .safetensors checkpoint (README, Presets)")
    if (e := _first(err, (GATED,))) is not None:
        return HubModelUnavailable(
            f"{where}.source: hub model {at} is gated ({_reason(e)}); accept its terms on huggingface.co "
            f"and log in (hf auth login, or set HF_TOKEN), {local}")
    if (e := _first(err, NOT_FOUND)) is not None:
        what = "revision" if any(k.__name__ == NOT_FOUND[0] for k in type(e).__mro__) else "repository"
        return HubModelUnavailable(
            f"{where}.source: the hub has no {what} {at} ({_reason(e)}); check {where}.source and "
            f"{where}.revision, {local}")
    if (e := _first(err, UNREACHABLE)) is not None:
        return HubModelUnavailable(
            f"{where}.source: cannot reach the Hugging Face Hub for {at}, and it is not in the local cache "
            f"({_reason(e)}); connect once to download it (HF_HUB_OFFLINE unset), {local}")
    return None


@contextmanager
def hub_errors(repo: str, revision: str | None, where: str) -> Iterator[None]:
    """Turn a failed hub load into HubModelUnavailable; anything else propagates unchanged."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - classified below, re-raised when not a hub problem
        mapped = explain(err, repo, revision, where)
        if mapped is None:
            raise
        raise mapped from err
