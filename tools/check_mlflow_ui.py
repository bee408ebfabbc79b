#!/usr/bin/env python3
"""Open a study's MLflow UI in headless Chromium as a new user would, and save what it shows.

    python tools/check_mlflow_ui.py [STUDY_ROOT] [--out bench/out/mlflow_ui]

Starts `mlflow ui` on the study's mlflow.db (loopback, a free port), then loads two pages: the
experiment as a click in MLflow's experiment list opens it in a new browser (reported: MLflow 3.17
shows its GenAI overview there, its workflow toggle's default), the same with the toggle on "Model
training" (it must show the runs), and the study's saved runs view (`tracking.view_path`, the link
`dreamsolo ui` prints): it must show every pair's run with the metric columns. Each page's screenshot and text are written
to --out. Exit status: 0 the view is right, 1 it is not, 2 chromium missing. Needs Debian's `chromium`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--hide-scrollbars", "--window-size=1600,1000",
         "--virtual-time-budget=25000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            sys.exit("mlflow ui exited before it answered")
        time.sleep(0.5)
    sys.exit(f"mlflow ui did not answer on port {port} within {seconds:g} s")


def page_text(chromium: str, url: str, shot: Path) -> str:
    """The rendered page's visible text (from its DOM, tags stripped), and a screenshot: one chromium run
    does both (rendering MLflow's app is most of this tool's time)."""
    with tempfile.TemporaryDirectory() as profile:
        flags = [*FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run([chromium, *flags, f"--screenshot={shot}", "--dump-dom", url], capture_output=True,
                             text=True, timeout=180).stdout
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default=".", type=Path)
    ap.add_argument("--out", type=Path, default=Path("bench/out/mlflow_ui"))
    args = ap.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    from mlflow.tracking import MlflowClient

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from dreamsolo import tracking

    uri = f"sqlite:///{(args.root / 'mlflow.db').resolve().as_posix()}"
    exp = MlflowClient(uri).get_experiment_by_name(tracking.EXPERIMENT)
    if exp is None:
        print(f"no experiment {tracking.EXPERIMENT!r} in {uri}: run the study first", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    runs = MlflowClient(uri).search_runs([exp.experiment_id], "tags.dreamsolo_parent LIKE '%'")
    pairs = sorted(r.data.tags["dreamsolo_parent"] for r in runs)
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen([mlflow, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"],  # one browser; each of MLflow's default 4 workers imports MLflow
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    bad = []
    try:
        wait_for(port, proc)
        home = f"http://127.0.0.1:{port}"
        pages = {"experiment": f"{home}/#/experiments/{exp.experiment_id}",  # as a click in the list opens it
                 # the same with MLflow's workflow toggle on "Model training": the page follows the toggle
                 "experiment_model_training": f"{home}/#/experiments/{exp.experiment_id}?workflowType=machine_learning",
                 "study_view": home + tracking.view_path(exp.experiment_id)}
        for name, url in pages.items():
            text = page_text(chromium, url, args.out / f"{name}.png")
            (args.out / f"{name}.txt").write_text(text)
            genai = "No data available" in text or "Traces 0" in text
            print(f"{name}: {url}\n  screenshot {args.out / f'{name}.png'}; "
                  f"{'the GenAI overview' if genai else 'no GenAI overview'}; text: {text[:200]!r}")
            if name == "experiment_model_training" and (genai or " Runs " not in text):
                bad.append(f"{name}: expected the runs table once the toggle says Model training")
            if name == "study_view":  # the page the README and the report link to
                missing = [p for p in pairs if f"pair {p}" not in text]
                if genai or missing or "lpips_instance_mean" not in text:
                    bad.append(f"{name}: expected the pair runs with their metric columns "
                               f"(missing pairs: {missing or 'none'})")
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    for b in bad:
        print("problem:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
