"""The real Google Pub/Sub emulator (Cloud SDK's jar) for tests, on a free loopback port.

Never skips: a test that asks for the emulator FAILS with the reason when it cannot start (no
Cloud SDK component, no Java, did not listen), because a silently skipped fidelity tier is how
a broken Pub/Sub path would ship.

    with Emulator() as emu:                 # or the `pubsub_emulator` fixture (module scope)
        env = emu.env()                     # {"PUBSUB_EMULATOR_HOST": "127.0.0.1:PORT"}
        topic = emu.create_topic("t1")      # projects/<emu.project>/topics/t1
        sub = emu.create_pull_subscription("t1", "s1")
        msgs = emu.pull(sub, want=1, timeout=10)   # -> list[(data bytes, attributes dict)]
        emu.stop(); emu.start()             # an outage, then back on the same port

The admin calls set PUBSUB_EMULATOR_HOST in *this* process' environment while the emulator is
up (the google clients read it at construction), and restore it on close.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SDK_ROOTS = ("/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/opt/google-cloud-sdk")
PROJECT = "resonate-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emulator_command(port: int) -> list[str]:
    """The emulator's own launcher (what `gcloud beta emulators pubsub start` wraps), else gcloud."""
    roots = list(SDK_ROOTS)
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.insert(0, str(Path(os.path.realpath(gcloud)).parents[1]))
    for root in roots:
        script = Path(root) / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
        if script.exists():
            return [str(script), "--host=127.0.0.1", f"--port={port}"]
    if gcloud:
        return [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}", "--quiet"]
    raise RuntimeError(
        "Pub/Sub emulator not found: no `cloud-pubsub-emulator` under "
        f"{', '.join(roots)}/platform/pubsub-emulator/bin and no `gcloud` on PATH "
        "(install the Cloud SDK component google-cloud-cli-pubsub-emulator)")


class Emulator:
    """One emulator process; `start()`/`stop()` may repeat (same port) to simulate an outage."""

    def __init__(self, project: str = PROJECT, port: int | None = None) -> None:
        self.project = project
        self.port = port or _free_port()
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0
        self._log = Path(tempfile.mkstemp(prefix="pubsub-emulator-", suffix=".log")[1])
        self._saved_env: str | None = os.environ.get("PUBSUB_EMULATOR_HOST")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for a server subprocess that should publish here."""
        return {"PUBSUB_EMULATOR_HOST": self.host, "PUBSUB_PROJECT_ID": self.project}

    def logs(self) -> str:
        return self._log.read_text(errors="replace")

    def start(self, timeout: float = 60.0) -> Emulator:
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise RuntimeError("Pub/Sub emulator cannot run: no `java` on PATH and no JAVA_HOME (it needs Java 8+)")
        cmd = emulator_command(self.port)
        t0 = time.monotonic()
        fh = open(self._log, "ab")
        # own session: stop() signals the whole group (gcloud wraps the java process)
        self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        fh.close()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Pub/Sub emulator exited {self.proc.returncode} ({' '.join(cmd)}):\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"Pub/Sub emulator did not listen on {self.host} within {timeout}s:\n{self.logs()}")
        self.startup_s = time.monotonic() - t0
        os.environ["PUBSUB_EMULATOR_HOST"] = self.host
        atexit.register(self.stop)  # no emulator outlives a crashed test run
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.proc = None
        # the port must be free again before a restart on it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    time.sleep(0.05)
            except OSError:
                return

    def close(self) -> None:
        self.stop()
        if self._saved_env is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = self._saved_env

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- admin and pull helpers (real google-cloud-pubsub clients) --------------------------

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, sub: str) -> str:
        return f"projects/{self.project}/subscriptions/{sub}"

    def create_topic(self, topic: str) -> str:
        from google.cloud import pubsub_v1

        path = self.topic_path(topic)
        pubsub_v1.PublisherClient().create_topic(request={"name": path}, timeout=30)
        return path

    def create_pull_subscription(self, topic: str, sub: str, ack_deadline_s: int = 10) -> str:
        from google.cloud import pubsub_v1

        path = self.subscription_path(sub)
        with pubsub_v1.SubscriberClient() as client:
            client.create_subscription(request={"name": path, "topic": self.topic_path(topic),
                                                "ack_deadline_seconds": ack_deadline_s}, timeout=30)
        return path

    def create_push_subscription(self, topic: str, sub: str, endpoint: str) -> str:
        from google.cloud import pubsub_v1

        path = self.subscription_path(sub)
        with pubsub_v1.SubscriberClient() as client:
            client.create_subscription(request={"name": path, "topic": self.topic_path(topic),
                                                "push_config": {"push_endpoint": endpoint}}, timeout=30)
        return path

    def publish(self, topic: str, data: bytes, **attributes: str) -> str:
        from google.cloud import pubsub_v1

        return pubsub_v1.PublisherClient().publish(self.topic_path(topic), data, **attributes).result(timeout=30)

    def pull(self, subscription: str, want: int = 1, timeout: float = 10.0,
             ack: bool = True) -> list[tuple[bytes, dict[str, str]]]:
        """Pull until `want` messages arrived or `timeout` passed; ack them unless told not to."""
        from google.api_core.exceptions import DeadlineExceeded
        from google.cloud import pubsub_v1

        got: list[tuple[bytes, dict[str, str]]] = []
        deadline = time.monotonic() + timeout
        with pubsub_v1.SubscriberClient() as client:
            while len(got) < want and time.monotonic() < deadline:
                wait = max(0.2, min(2.0, deadline - time.monotonic()))
                try:  # a long pull: the emulator answers when messages arrive, else at the deadline
                    resp = client.pull(request={"subscription": subscription, "max_messages": want - len(got)},
                                       timeout=wait, retry=None)
                except DeadlineExceeded:
                    continue
                if not resp.received_messages:
                    continue
                for m in resp.received_messages:
                    got.append((bytes(m.message.data), dict(m.message.attributes)))
                if ack:
                    client.acknowledge(request={"subscription": subscription,
                                                "ack_ids": [m.ack_id for m in resp.received_messages]}, timeout=10)
        return got


def emulator_or_fail(project: str = PROJECT) -> Emulator:
    """Start one; pytest.fail (never skip) with the reason when it cannot run here."""
    emu = Emulator(project)
    try:
        return emu.start()
    except (RuntimeError, OSError) as e:
        emu.close()
        pytest.fail(f"the real Pub/Sub emulator is required for this test and cannot run here: {e}",
                    pytrace=False)
        raise  # unreachable


@pytest.fixture(scope="module")
def pubsub_emulator() -> Iterator[Emulator]:
    """A real emulator per test module (import this fixture into the test module to use it)."""
    emu = emulator_or_fail()
    yield emu
    emu.close()
