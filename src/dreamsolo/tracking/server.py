"""Where runs go: the tracking URI, a reachability probe that fails in seconds, and the local fallback."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from dreamsolo.errors import UserError


class TrackingUnreachable(UserError, RuntimeError):
    """The tracking server does not answer: the stage stops before any work."""


class TrackingLost(UserError, RuntimeError):
    """Logging failed during the stage (the server went away): the stage fails, so DVC records nothing
    of it, and `dvc repro` runs it again once the server answers."""

    def __init__(self, uri: str, err: BaseException) -> None:
        why = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        super().__init__(f"MLflow logging failed ({_redact(urlparse(uri))}): {why}. DVC recorded nothing of "
                         "this stage; once the tracking server answers, `dvc repro` runs it again")


def tracking_uri(root: Path) -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store in the study root (MLflow >= 3.7's own default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').as_posix()}"


FALLBACK_ENV = "DREAMSOLO_TRACKING_FALLBACK"  # "local": use the study's mlflow.db when the server is down


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail in seconds, before any work, when a tracking server does not answer HTTP.

    Any HTTP answer counts (even 401/404: MLflow's own request decides); a refused or silent port,
    an unknown host, or a proxy's 502/503/504 does not. Credentials in the URI are never shown.
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    why = _probe(parsed, timeout)
    if why:
        summary = f"MLflow tracking server {_redact(parsed)} is unreachable ({why})"
        err = TrackingUnreachable(
            f"{summary}. Start it, fix MLFLOW_TRACKING_URI, unset it to log to the study's mlflow.db, "
            f"or set {FALLBACK_ENV}=local to log there whenever the server is down"
        )
        err.summary = summary  # type: ignore[attr-defined]
        raise err


def _redact(parsed) -> str:
    if parsed.password is None:
        return parsed.geturl()
    return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)).geturl()


def _probe(parsed, timeout: float) -> str | None:
    """None when something answers HTTP at the URI, else why not (a few words)."""
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    host = f"[{parsed.hostname}]" if parsed.hostname and ":" in parsed.hostname else parsed.hostname
    if not host:
        return "no host name in the URI"
    try:
        netloc = f"{host}:{parsed.port}" if parsed.port else host
    except ValueError as e:  # a port that is not a number
        return str(e)
    url = parsed._replace(netloc=netloc).geturl()  # credentials stay out of the probe
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "dreamsolo"}),
                                    timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        status = e.code
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            return None  # TLS answered; certificate settings are MLflow's (MLFLOW_TRACKING_INSECURE_TLS)
        return _why(e.reason, timeout)
    except (OSError, http.client.HTTPException) as e:
        return _why(e, timeout)
    return f"it answered HTTP {status}" if status in (502, 503, 504) else None


def _why(err: object, timeout: float) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(err, socket.gaierror):
        return f"unknown host: {err.strerror}"
    return str(err) or type(err).__name__


_resolved: dict[tuple[str, str, str], str] = {}


def resolve_uri(root: Path) -> str:
    """The URI this process logs to: `tracking_uri(root)` when it answers. When a server does not,
    TrackingUnreachable, or with DREAMSOLO_TRACKING_FALLBACK=local the study's own SQLite store,
    said once on stderr. An env var, not a params key: it must not change any DVC stage."""
    mode = os.environ.get(FALLBACK_ENV, "").strip()
    if mode not in ("", "local"):
        raise ValueError(f"{FALLBACK_ENV}={mode!r}: expected 'local' or unset")
    uri = tracking_uri(root)
    key = (uri, mode, str(root))
    if key not in _resolved:
        try:
            check_reachable(uri)
            _resolved[key] = uri
        except TrackingUnreachable as e:
            if mode != "local":
                raise
            local = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
            print(f"warning: {e.summary}; {FALLBACK_ENV}=local: logging to {local} instead "  # type: ignore
                  f"(see it with: mlflow ui --backend-store-uri {local})", file=sys.stderr)
            _resolved[key] = local
    return _resolved[key]
