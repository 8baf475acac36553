"""``make run``: prepare the database and serve carhub, API and consumer together.

Applies migrations, seeds reference data, ensures the admin from the environment,
then runs gunicorn and the consumer side by side. If either dies the other is
stopped too and the run ends with an error, so nothing half-running is left behind
(the consumer restarts its own worker; see consumer.py). Ctrl-C stops both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def flask(*args: str) -> None:
    subprocess.run([str(BIN / "flask"), *args], check=True, cwd=ROOT)


def main() -> int:
    os.environ.setdefault("FLASK_APP", "app:create_app")
    metrics_dir = ROOT / "instance" / "prometheus"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))

    flask("db", "upgrade")
    flask("seed")
    flask("users", "ensure-admin")
    if os.environ.get("RABBITMQ_URL"):
        flask("topology", "declare")

    port = os.environ.get("PORT", "8000")
    web = subprocess.Popen(
        [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "app:create_app()"],
        cwd=ROOT,
    )
    worker = subprocess.Popen([str(BIN / "python"), "consumer.py"], cwd=ROOT)
    children = (web, worker)

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        stop()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    return max(child.returncode or 0 for child in children)


if __name__ == "__main__":
    sys.exit(main())
