"""The forked MLflow logger of a stage process: MLflow's ~2 s of import and store set-up run beside the
stage's own imports and work instead of before them. Metrics are sent without waiting; artifacts,
tables and the end of the run wait for the logger, so files are logged before they can move and a
logging error fails the stage.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _serve(conn, stage_end, uri: str) -> None:
    import signal

    stage_end.close()  # else the pipe never reports EOF when the stage dies (e.g. SIGKILL)
    from dreamsolo import tracking  # in the forked child only: tracking never imports this module

    # Ctrl-C reaches the whole process group: let the stage decide, and close its run as FAILED
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run = None
    error: BaseException | None = None
    try:  # warm up while the stage imports torch: import mlflow, open the store
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.tracking.MlflowClient().search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - reported with the first reply
        error = e
    while True:
        try:
            op, args, reply = conn.recv()
        except EOFError:
            return
        if op == "stop":
            return
        result: Any = None
        try:
            if error is not None:
                raise error
            if op == "open":
                run = tracking.runs._open(*args)
            elif op == "end":
                run._m.end_run(args[0])
                run = None
            else:
                getattr(run, op)(*args)
        except BaseException as e:  # noqa: BLE001 - sent back to the stage
            error = error or e
            result = e
        if reply:
            conn.send(result if result is not None else error)
            error = None if op == "end" else error


class Proxy:
    """The `tracking.Run` interface, forwarded to the logger process."""

    def __init__(self, conn, uri: str) -> None:
        self._conn, self._uri = conn, uri

    def _call(self, op: str, args: tuple, reply: bool) -> None:
        try:
            self._conn.send((op, args, reply))
            err = self._conn.recv() if reply else None
        except (OSError, EOFError) as e:
            raise RuntimeError(f"the MLflow logger process is gone ({e!r}); nothing more is logged") from e
        if reply and err is not None:
            from dreamsolo.tracking import TrackingLost

            raise TrackingLost(self._uri, err) from err

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        self._call("metrics", ({k: float(v) for k, v in values.items()}, step), False)

    def parent_metrics(self, values: dict[str, float], tags: dict[str, str]) -> None:
        self._call("parent_metrics", ({k: float(v) for k, v in values.items()}, tags), False)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        self._call("artifact", (path, folder), True)

    def table(self, df, name: str) -> None:
        self._call("table", (df, name), True)

    def dict(self, data: dict, name: str) -> None:
        self._call("dict", (data, name), True)

    def tags(self, values: dict[str, str]) -> None:
        self._call("tags", (values,), False)


class Worker:
    def __init__(self, proc, conn) -> None:
        self.proc, self.conn = proc, conn

    @classmethod
    def start(cls, uri: str) -> Worker | None:
        from dreamsolo.warm.client import switched_on
        from dreamsolo.warm.server import fresh_fork

        if "fork" not in mp.get_all_start_methods():
            return None  # no fork (Windows, macOS default): log in-process
        if not fresh_fork() and (not switched_on() or "torch" in sys.modules):
            return None  # switched off, or too late to fork safely: log in-process
        ctx = mp.get_context("fork")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(theirs, ours, uri), daemon=True, name="dreamsolo-mlflow")
        proc.start()
        theirs.close()
        worker = cls(proc, ours)
        # The logger ignores SIGTERM, so multiprocessing's exit hook (terminate, then join) would wait
        # forever: stop it first (atexit runs hooks last-in first-out).
        atexit.register(worker.stop)
        return worker

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(("stop", (), False))
        self.proc.join(timeout=60)

    @contextlib.contextmanager
    def run(self, root: Path, uri: str, stage: str, params: dict, pair: str | None,
            warning: str | None, item: str | None = None) -> Iterator[Proxy]:
        proxy = Proxy(self.conn, uri)
        proxy._call("open", (root, uri, stage, params, pair, warning, sys.argv, item), False)
        try:
            yield proxy
        except BaseException:
            with contextlib.suppress(Exception):
                proxy._call("end", ("FAILED",), True)
            raise
        proxy._call("end", ("FINISHED",), True)
