"""Bounded load: LOAD_JOBS (default 200) jobs submitted at once, from as many threads, to a worker
with a small queue (--queue-capacity 4) on the tiny model, through the native API (half, with
their SSE streams followed), the OpenAI face and the A1111 face. Accepted jobs all complete with a
decodable image; refused ones get 429/503 with Retry-After; the queue never holds more than its
capacity; /health answers in < 50 ms at the 99th percentile while the engine is busy; and
everything ends within LOAD_DEADLINE_S (no deadlock)."""

import base64
import concurrent.futures
import io
import json
import os
import threading
import time

import requests
from PIL import Image

from worker import Worker

LOAD_JOBS = int(os.environ.get("LOAD_JOBS", "200"))
QUEUE_CAPACITY = 4
SIZE = 64
LOAD_DEADLINE_S = float(os.environ.get("LOAD_DEADLINE_S", "300"))
HEALTH_P99_LIMIT_S = 0.050
REQUEST_TIMEOUT_S = 120


def decodable(data: bytes) -> bool:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.size == (SIZE, SIZE)


def refused(reply: requests.Response) -> str:
    assert reply.status_code in (429, 503), f"{reply.status_code}: {reply.text[:300]}"
    assert reply.headers.get("Retry-After", "").isdigit(), f"no Retry-After on a refusal: {dict(reply.headers)}"
    return "refused"


def native_job(base: str, seed: int) -> str:
    body = {"operation": "image_generation", "hive_id": "localhost", "prompt": "a red fox", "steps": 1,
            "width": SIZE, "height": SIZE, "seed": seed}
    created = requests.post(f"{base}/v1/jobs", json=body, timeout=REQUEST_TIMEOUT_S)
    if created.status_code != 200:
        return refused(created)
    images = []
    final = None
    with requests.get(base + created.json()["sse_url"], stream=True, timeout=REQUEST_TIMEOUT_S) as stream:
        event = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                if event == "complete":
                    images.append(base64.b64decode(json.loads(data)["image"]))
                elif event is None and data.startswith("["):
                    final = data
                event = None
    assert final == "[DONE]", final
    assert len(images) == 1 and decodable(images[0])
    return "completed"


def openai_job(base: str, seed: int) -> str:
    body = {"model": "dall-e-2", "prompt": "a red fox", "size": f"{SIZE}x{SIZE}", "steps": 1, "seed": seed,
            "response_format": "b64_json"}
    reply = requests.post(f"{base}/v1/images/generations", json=body, timeout=REQUEST_TIMEOUT_S)
    if reply.status_code != 200:
        return refused(reply)
    assert decodable(base64.b64decode(reply.json()["data"][0]["b64_json"]))
    return "completed"


def a1111_job(base: str, seed: int) -> str:
    body = {"prompt": "a red fox", "width": SIZE, "height": SIZE, "steps": 1, "seed": seed}
    reply = requests.post(f"{base}/sdapi/v1/txt2img", json=body, timeout=REQUEST_TIMEOUT_S)
    if reply.status_code != 200:
        return refused(reply)
    assert decodable(base64.b64decode(reply.json()["images"][0]))
    return "completed"


def job(base: str, index: int, start: threading.Barrier) -> str:
    start.wait()
    kind = index % 4
    if kind == 2:
        return openai_job(base, index)
    if kind == 3:
        return a1111_job(base, index)
    return native_job(base, index)


class Sampler(threading.Thread):
    """Times /health and reads the queue length from /v1/ready until stopped."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()
        self.busy_health_s = []
        self.max_queue = 0
        self.session = requests.Session()

    def run(self) -> None:
        while not self.stop.is_set():
            ready = self.session.get(f"{self.base}/v1/ready", timeout=5).json()
            self.max_queue = max(self.max_queue, ready["queue_length"])
            started = time.perf_counter()
            health = self.session.get(f"{self.base}/health", timeout=5)
            elapsed = time.perf_counter() - started
            assert health.status_code == 200
            if ready["state"] == "busy":
                self.busy_health_s.append(elapsed)
            time.sleep(0.005)


def percentile(values: list, share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def test_concurrent_jobs_are_served_or_refused_and_health_stays_fast():
    worker = Worker("--queue-capacity", str(QUEUE_CAPACITY))
    try:
        worker.wait_listening()
        deadline = time.monotonic() + 60
        while requests.get(f"{worker.base_url}/v1/ready", timeout=2).status_code != 200:
            assert time.monotonic() < deadline, "the worker never became ready"
            time.sleep(0.05)
        sampler = Sampler(worker.base_url)
        sampler.start()
        started = time.monotonic()
        start = threading.Barrier(LOAD_JOBS)
        with concurrent.futures.ThreadPoolExecutor(max_workers=LOAD_JOBS) as pool:
            futures = [pool.submit(job, worker.base_url, i, start) for i in range(LOAD_JOBS)]
            done, pending = concurrent.futures.wait(futures, timeout=LOAD_DEADLINE_S)
            assert not pending, f"{len(pending)} jobs still open after {LOAD_DEADLINE_S} s: deadlock?"
            outcomes = [f.result() for f in done]
        elapsed = time.monotonic() - started
        sampler.stop.set()
        sampler.join(timeout=10)
        assert requests.get(f"{worker.base_url}/v1/ready", timeout=5).json()["queue_length"] == 0
    finally:
        worker.stop()

    completed, refusals = outcomes.count("completed"), outcomes.count("refused")
    assert completed + refusals == LOAD_JOBS
    assert completed >= 1 + QUEUE_CAPACITY, f"the running job and a full queue complete, got {completed}"
    assert sampler.max_queue <= QUEUE_CAPACITY, f"queue held {sampler.max_queue} > {QUEUE_CAPACITY}"
    assert len(sampler.busy_health_s) >= 10, f"too few /health samples while busy: {len(sampler.busy_health_s)}"
    p99 = percentile(sampler.busy_health_s, 0.99)
    print(
        f"\nload: {LOAD_JOBS} jobs in {elapsed:.1f} s: {completed} completed, {refusals} refused; queue max "
        f"{sampler.max_queue}/{QUEUE_CAPACITY}; /health while busy: {len(sampler.busy_health_s)} samples, "
        f"p50 {percentile(sampler.busy_health_s, 0.5) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    assert p99 < HEALTH_P99_LIMIT_S, f"/health p99 {p99 * 1000:.1f} ms while busy"
