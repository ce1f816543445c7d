"""Screenshots of the XOR lab in a real TensorBoard, for the README: `python tools/screenshots.py`.

Run by hand (not a test), from the repository root with the dev extras installed:

    python tools/screenshots.py [--out docs] [--steps 2001] [--wait-ms 15000]

It (1) installs Chromium with `apt-get update && apt-get install -y chromium` when no
`chromium` is on PATH (Debian; needs root), (2) runs the lab (`python -m npnn.xor`) with two
learning rates into a temporary logdir, (3) starts `tensorboard --logdir` on a free loopback
port (tests/tbserver.py), (4) drives headless Chromium over the scalars, histograms,
distributions, graphs and hparams dashboards and saves one PNG each into --out
(docs/xor_<dashboard>.png). TensorBoard's single-page app draws after it has fetched its data:
`--virtual-time-budget` lets Chromium run the page's timers that long before the screenshot;
raise --wait-ms when a PNG comes out blank.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from tbserver import tensorboard  # noqa: E402  (the tests' TensorBoard launcher)

# name -> URL fragment of the dashboard (TensorBoard 2.x routes)
DASHBOARDS = {
    "scalars": "#scalars",
    "histograms": "#histograms",
    "distributions": "#distributions",
    "graphs": "#graphs&run=lr_0.01",
    "hparams": "#hparams",
}


def find_chromium() -> str:
    """Path of chromium, installing the Debian package first when it is missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    print("chromium not found: apt-get update && apt-get install -y chromium", flush=True)
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True)
    path = shutil.which("chromium")
    if not path:
        raise SystemExit("chromium is still missing after apt-get install")
    return path


def screenshot(chromium: str, url: str, png: Path, wait_ms: int, size: str) -> None:
    """One headless Chromium run: load url, let the page run wait_ms of (virtual) time, save png."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={size}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={png}",
            url,
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
    if not png.exists() or png.stat().st_size == 0:
        raise SystemExit(f"chromium wrote no screenshot for {url}")


def main() -> None:
    """Run the lab, serve it with TensorBoard, screenshot each dashboard into --out."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs"), help="directory for the PNGs (default: docs/)")
    p.add_argument("--steps", type=int, default=2001, help="lab steps per run (default: %(default)s)")
    p.add_argument("--wait-ms", type=int, default=15000, help="virtual time the page gets before the shot")
    p.add_argument("--size", default="1400,900", help="window size WIDTH,HEIGHT (default: %(default)s)")
    p.add_argument("--only", action="append", choices=sorted(DASHBOARDS), help="only these dashboards")
    args = p.parse_args()
    chromium = find_chromium()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xor-screens-") as tmp:
        logdir = Path(tmp) / "xor_logs"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "npnn.xor",
                "--logdir",
                str(logdir),
                "--steps",
                str(args.steps),
                "--lr",
                "0.1",
                "--lr",
                "0.01",
                "--quiet",
            ],
            check=True,
        )
        with tensorboard(logdir, load_fast=False) as tb:
            # Wait until the server has loaded both runs before the browser asks.
            tb.wait_for(lambda: tb.json("/data/plugin/scalars/tags"), lambda r: len(r) == 2)
            for name in args.only or DASHBOARDS:
                png = out / f"xor_{name}.png"
                screenshot(chromium, tb.base + "/" + DASHBOARDS[name], png, args.wait_ms, args.size)
                print(f"{png} ({png.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
