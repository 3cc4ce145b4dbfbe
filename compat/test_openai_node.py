"""The unmodified `openai` npm SDK (compat/node, pinned by package-lock.json) against the worker: the
JavaScript twin of test_openai.py. `npm ci` installs it on first use; the test runs `node --test`."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are required in CI (.ci/run installs them)")
        pytest.skip("node/npm not installed")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    return NODE_DIR / "node_modules"


def test_the_openai_npm_sdk_passes_its_suite(node_modules, worker, keyed_worker):
    env = dict(os.environ, OPENAI_BASE_URL=worker.base_url, KEYED_BASE_URL=keyed_worker.base_url)
    run = subprocess.run(
        ["node", "--test", "--test-reporter=spec", "openai_images.test.mjs"],
        cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=600,
    )
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
