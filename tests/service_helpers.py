"""What the service tests share: waiting for a real server on 127.0.0.1 to become ready, and
reading one metric from its /metrics page."""
import time
from pathlib import Path

import httpx


def wait_ready(proc, base: str, stderr: Path, timeout: float, headers=None) -> None:
    """Poll ``base``/readyz until it answers 200.

    RAISES (RuntimeError): the server exited, or was not ready after ``timeout`` seconds; with its stderr.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {stderr.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/readyz", timeout=5, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout} s: {stderr.read_text()[-3000:]}")


def metric_value(client: httpx.Client, name: str, **labels) -> float:
    """Sum of the samples of metric ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
