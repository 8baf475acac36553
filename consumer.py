"""The worker process: outbox relay and consumers. Filled in by the event backbone."""

from __future__ import annotations

import signal
import sys
import time


def main() -> int:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
