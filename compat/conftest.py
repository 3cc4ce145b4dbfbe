"""Fixtures shared by the compatibility tests: the worker binary, started on a free port with the
tiny SD 1.5 fixture model, exactly as a user would start it."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY_SD15 = REPO / "tests" / "fixtures" / "tiny-sd15"
READY_TIMEOUT_S = 120


def worker_binary() -> Path:
    """Build (if needed) and locate the worker binary, honouring CARGO_TARGET_DIR."""
    override = os.environ.get("SD_WORKER_BIN")
    if override:
        return Path(override)
    subprocess.run(["cargo", "build", "--quiet", "--bin", "sd-worker-rbee"], cwd=REPO, check=True)
    metadata = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO, check=True, capture_output=True, text=True
    )
    return Path(json.loads(metadata.stdout)["target_directory"]) / "debug" / "sd-worker-rbee"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """A running worker process; `base_url` is what an OpenAI client gets as `base_url`."""

    def __init__(self, binary: Path, *extra_args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.log = tempfile.NamedTemporaryFile(prefix="sd-worker-", suffix=".log", delete=False)
        self.models_dir = tempfile.mkdtemp(prefix="sd-worker-hf-")
        args = [str(binary), "--model", str(TINY_SD15), "--port", str(self.port), "--models-dir", self.models_dir, *extra_args]
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.process.returncode}; log: {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/ready", timeout=2) as response:
                    if json.load(response).get("ready"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the worker was not ready within {READY_TIMEOUT_S} s; log: {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def binary() -> Path:
    return worker_binary()


@pytest.fixture(scope="session")
def worker(binary):
    """A worker without --api-key: any bearer token is accepted."""
    running = Worker(binary)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def keyed_worker(binary):
    """A worker started with --api-key sk-right."""
    running = Worker(binary, "--api-key", "sk-right")
    yield running
    running.stop()
