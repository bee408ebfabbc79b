#!/usr/bin/env python3
"""Open reports/index.html in headless Chromium; fail if an <img> did not load or the page logged errors.

    python tools/check_page.py [reports/index.html] [--screenshot reports/page.png]

Needs Debian's `chromium` (apt-get install chromium); no pip-installed browser. The page itself
is never modified: a copy with a probe script and a <base> pointing at the page's folder is
loaded from a temporary directory, and the probe writes its findings into the dumped DOM.
Exit status: 0 all good, 1 the page has problems, 2 chromium missing or bad usage.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

MARK = "__page_check__"
PROBE = """<script>(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target || {};
    errors.push(e.message ? "error: " + e.message : "failed to load: " + (t.src || t.href || "resource"));
  }, true);
  var ce = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    ce.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var imgs = document.images, broken = [];
    for (var i = 0; i < imgs.length; i++) {
      if (!imgs[i].complete || imgs[i].naturalWidth === 0) broken.push(imgs[i].getAttribute("src"));
    }
    var d = document.createElement("pre");
    d.id = "%s"; d.style.display = "none";
    d.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: errors,
                                    height: document.documentElement.scrollHeight});
    document.body.appendChild(d);
  });
})();</script>""" % MARK
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-default-apps", "--mute-audio", "--virtual-time-budget=10000"]


def find_chromium(explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).exists() else None
    for cand in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    return None


def outside_refs(text: str) -> list[str]:
    """src/href values that leave the page's folder (scheme, absolute path, '..')."""
    bad = []
    for ref in re.findall(r'\b(?:src|href)\s*=\s*["\']([^"\']*)["\']', text, flags=re.I):
        p = PurePosixPath(ref)
        if not ref.startswith("#") and (":" in ref or ref.startswith("//") or p.is_absolute() or ".." in p.parts):
            bad.append(ref)
    return bad


def probe_copy(page: Path, tmp: Path) -> Path:
    """The page with <base href=its folder> and the probe script first in <head>."""
    text = page.read_text(encoding="utf-8")
    inject = f'<base href="{page.parent.resolve().as_uri()}/">{PROBE}'
    m = re.search(r"<head[^>]*>", text, flags=re.I)
    text = text[: m.end()] + inject + text[m.end():] if m else inject + text
    out = tmp / "probe.html"
    out.write_text(text, encoding="utf-8")
    return out


def run_chromium(chromium: str, url: str, tmp: Path, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [chromium, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def read_probe(dom: str) -> dict | None:
    m = re.search(rf'<pre id="{MARK}"[^>]*>(.*?)</pre>', dom, flags=re.S)
    return json.loads(html.unescape(m.group(1))) if m else None


def check(page: Path, chromium: str, screenshot: Path | None, timeout: float) -> list[str]:
    problems = [f"page links outside its folder: {r}" for r in outside_refs(page.read_text(encoding="utf-8"))]
    with tempfile.TemporaryDirectory(prefix="check_page-") as name:
        tmp = Path(name)
        url = probe_copy(page, tmp).as_uri()
        proc = run_chromium(chromium, url, tmp, ["--dump-dom"], timeout)
        result = read_probe(proc.stdout)
        if result is None:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            return problems + [f"chromium did not report the page (exit {proc.returncode}):\n{tail}"]
        problems += [f"image did not load: {src}" for src in result["broken"]]
        problems += [f"page error: {e}" for e in result["errors"]]
        print(f"{result['images'] - len(result['broken'])}/{result['images']} images loaded, "
              f"{len(result['errors'])} page errors, page height {result['height']} px")
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            height = min(max(int(result["height"]), 600), 16000)
            shot = run_chromium(chromium, url, tmp, [f"--screenshot={screenshot.resolve()}",
                                                     f"--window-size=1280,{height}"], timeout)
            if not screenshot.is_file():
                problems.append(f"screenshot failed (exit {shot.returncode})")
            else:
                print(f"screenshot: {screenshot}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", nargs="?", default="reports/index.html", type=Path)
    ap.add_argument("--screenshot", type=Path, default=None, help="also save a full-page PNG here")
    ap.add_argument("--chromium", default=None, help="browser binary (default: chromium on PATH)")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per browser run")
    args = ap.parse_args(argv)
    if not args.page.is_file():
        print(f"check_page: no page at {args.page} (run the report stage first)", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("check_page: chromium not found; install it with "
              "`apt-get update && apt-get install -y chromium` (Debian package, not a pip download)",
              file=sys.stderr)
        return 2
    try:
        problems = check(args.page, chromium, args.screenshot, args.timeout)
    except subprocess.TimeoutExpired:
        problems = [f"chromium did not finish within {args.timeout:.0f} s"]
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if not problems:
        print(f"OK {args.page}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
