"""One command for the whole example: start worker.py as a second process, call it, stop it.

    RESONATE_URL=http://localhost:8001 python main.py
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

from caller import call  # caller.py imports `from resonate.resonate import Resonate` (resonate-sdk 0.8.1)

HERE = Path(__file__).resolve().parent


def start_worker() -> subprocess.Popen[str]:
    worker = subprocess.Popen([sys.executable, "-u", str(HERE / "worker.py")], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    for line in worker.stdout:  # wait for its "ready" line
        print(line, end="", flush=True)
        if " ready " in line:  # from here on, relay its output as it comes
            threading.Thread(target=lambda: [print(x, end="", flush=True) for x in worker.stdout], daemon=True).start()
            return worker
    raise SystemExit(f"the worker exited with status {worker.wait()} before it was ready")


def main() -> None:
    worker = start_worker()
    try:
        answer = asyncio.run(call("newcomer"))
    finally:
        worker.terminate()
        worker.wait(timeout=15)
    print(f"done: {answer}", flush=True)


if __name__ == "__main__":
    main()
