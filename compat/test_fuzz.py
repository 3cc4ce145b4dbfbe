"""Schema fuzzing: schemathesis generates requests for every operation of the published OpenAPI
document (all three faces) and checks that the worker never answers 5xx and that every answer
matches what the document says (status codes, content types, body schemas).

The worker runs the tiny SD 1.5 fixture with tight limits, so every request the fuzzer gets
accepted generates in well under a second; examples per operation are bounded
(SD_FUZZ_EXAMPLES, default 25) so the module fits a CI budget on two cores."""

import os
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import Worker

EXAMPLES = int(os.environ.get("SD_FUZZ_EXAMPLES", "25"))

# Every accepted job is tiny: 64 px sides, 2 steps, 2 images, short prompts, 1 MiB bodies.
TIGHT_LIMITS = (
    "--max-side", "64",
    "--max-pixels", "4096",
    "--max-steps", "2",
    "--max-images", "2",
    "--max-prompt-chars", "200",
    "--max-body-mib", "1",
    "--max-input-pixels", "16384",
    "--job-timeout", "60",
)

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzz_worker(binary):
    running = Worker(binary, *TIGHT_LIMITS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_worker):
    document = requests.get(f"{fuzz_worker.url}/api-docs/openapi.json", timeout=10).json()
    loaded = schemathesis.openapi.from_dict(document)
    loaded.config.update(base_url=fuzz_worker.url)
    return loaded


def test_no_server_errors_and_answers_match_the_schema(api_schema, fuzz_worker):
    # Operation by operation with plain hypothesis (schemathesis' pytest plugin does not load
    # lazily under pytest 9), collecting every failing operation before failing.
    failures, examples, operations = [], [0], 0
    started = time.monotonic()
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        @given(case=operation.as_strategy())
        def run(case):
            examples[0] += 1
            case.call_and_validate(base_url=fuzz_worker.url, checks=CHECKS, timeout=60)

        try:
            run()
        except (Exception, BaseExceptionGroup) as error:  # noqa: BLE001 - report each operation, then go on
            failures.append(f"{operation.label}: {str(error)[:2000]}")
    print(f"fuzzed {operations} operations with {examples[0]} examples in {time.monotonic() - started:.0f} s")
    assert not failures, "\n\n".join(failures)
