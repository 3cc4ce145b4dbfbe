"""Start and stop a real sd-worker-rbee process on the tiny fixture model, for client tests."""

import os
import pathlib
import socket
import subprocess
import tempfile
import time

import requests

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / "tests" / "fixtures" / "tiny-sd15"


def worker_binary() -> pathlib.Path:
    """SD_WORKER_BIN, else the debug build in the cargo target folder."""
    if os.environ.get("SD_WORKER_BIN"):
        return pathlib.Path(os.environ["SD_WORKER_BIN"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "sd-worker-rbee"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """A worker process serving the tiny model on 127.0.0.1:<free port>."""

    def __init__(self, *extra_args: str, model: pathlib.Path = TINY_MODEL):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = open(pathlib.Path(tempfile.gettempdir()) / f"sd-worker-rbee-compat-{self.port}.log", "w")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), HF_HUB_OFFLINE="1")
        self.process = subprocess.Popen(
            [str(worker_binary()), "--model", str(model), "--host", "127.0.0.1", "--port", str(self.port), *extra_args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; see {self.log.name}")
            try:
                requests.get(f"{self.base_url}/health", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError("worker did not start listening")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
