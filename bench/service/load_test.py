"""Load test of the PII service under attack: locust users mixing normal and adversarial requests.

    python -m bench load_test MODEL [--duration 10m] [--users 16] [--adversarial-chars 100000] [--name NAME]

Not part of CI: the 10-minute default run needs the machine to itself (load average under 1.5 at
start and end; both are recorded). ``--duration 30s`` is a smoke run.

It starts ``python -m spacy_ner_plus serve MODEL`` on 127.0.0.1 with a fresh API key, an audit log
and ``--torch-threads 1``, runs ``locust`` headless (bench/service/locustfile.py: 16 users, about one
request in nine adversarial: the issue's slow texts at ``--adversarial-chars``, a huge ``new_value``,
200,000 nested brackets, lone surrogates, invalid UTF-8, text/plain, a wrong key, PII in a dict key,
an unknown type), samples the server's resident memory every half second, then checks that every
/v1 answer the users got has exactly one audit record. Reported: requests, failures (500s,
undocumented statuses, non-documented error bodies, echoed input, no answer during the run; requests
cut off when locust stops its users are counted apart), answers by status and error kind,
p50/p95/p99 per request type and overall, peak RSS, audit records missing or extra.
Records the run in the ledger (bench/results/ledger/load_test/, a new file every run; the latest run
also in bench/results/service_load[_NAME].json) and exits 1 when any check fails.
"""
import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

from bench import provenance  # noqa: E402


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", duration.strip())
    if not match:
        raise SystemExit(f"--duration takes e.g. 30s, 10m or 1h, not {duration!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_sampler(pid: int, peak: dict, stop: threading.Event) -> None:
    import psutil

    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            return
        peak["bytes"] = max(peak.get("bytes", 0), rss)
        peak.setdefault("samples", []).append(rss)
        stop.wait(0.5)


def _start_server(model: str, workdir: Path, extra: list):
    keys = workdir / "api-keys"
    made = subprocess.run(
        [sys.executable, "-m", "spacy_ner_plus.service.auth", "add", "load-test", "--file", str(keys)],
        capture_output=True, text=True, check=True,
    )
    port = _free_port()
    audit = workdir / "audit.jsonl"
    cmd = [sys.executable, "-m", "spacy_ner_plus", "serve", model, "--host", "127.0.0.1", "--port", str(port),
           "--api-keys", str(keys), "--audit-log", str(audit), "--audit-max-bytes", str(2**40), "--torch-threads", "1", *extra]  # fmt: skip
    stderr = workdir / "server.stderr"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(stderr, "wb"))
    import httpx

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}: {stderr.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return proc, base, made.stdout.strip(), audit, stderr
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server was not ready in 300 s")


def _percentiles(ms: list) -> dict:
    if not ms:
        return {}
    ms = sorted(ms)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return {"requests": len(ms), "p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "max_ms": ms[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--duration", default="10m", help="e.g. 10m (the issue's run) or 30s (a smoke run)")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--spawn-rate", type=float, default=4.0)
    parser.add_argument("--adversarial-chars", type=int, default=100_000, help="size of each adversarial text")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `serve` option, repeatable (e.g. --server-arg=--request-timeout=10)")
    parser.add_argument("--name", default="", help="suffix of the result file")
    args = parser.parse_args()
    seconds = _seconds(args.duration)
    result = {
        "experiment": "service_load", "model": args.model, "commit": provenance.commit(), "duration_s": seconds, "users": args.users,
        "adversarial_chars": args.adversarial_chars, "server_args": args.server_arg,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_start": os.getloadavg()},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ner_plus_load_") as tmp:
        workdir = Path(tmp)
        proc, base, key, audit, stderr = _start_server(args.model, workdir, args.server_arg)
        peak: dict = {}
        stop = threading.Event()
        sampler = threading.Thread(target=_rss_sampler, args=(proc.pid, peak, stop), daemon=True)
        sampler.start()
        out = workdir / "locust"
        env = {**os.environ, "LOAD_API_KEY": key, "LOAD_OUT": str(out), "LOAD_ADVERSARIAL_CHARS": str(args.adversarial_chars)}
        cmd = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless", "--host", base,
               "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{int(seconds)}s", "--stop-timeout", "60",
               "--only-summary", "--exit-code-on-error", "0"]  # fmt: skip
        started = time.monotonic()
        run_end = time.time() + seconds
        locust = subprocess.run(cmd, env=env, capture_output=True, text=True)
        result["wall_s"] = round(time.monotonic() - started, 1)
        stop.set()
        sampler.join(5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        parts = sorted(out.glob("samples-*.jsonl"))
        if locust.returncode != 0 or not parts:
            sys.stderr.write(locust.stdout[-3000:] + locust.stderr[-3000:])
            raise SystemExit(f"locust failed with {locust.returncode}")
        samples = [json.loads(line) for part in parts for line in part.read_text(encoding="utf8").splitlines()]
        answers: dict = {}
        failures: dict = {}
        for s in samples:
            if s["status"]:
                key = f"{s['status']} {s['kind']}".strip()
            else:  # no answer: cut off when locust stopped its users, or a real failure during the run
                key = "0 cut off at the end of the run" if s["end"] >= run_end - 2 else "0 no answer"
            answers[key] = answers.get(key, 0) + 1
            if key != "0 cut off at the end of the run" and (s["failure"] or not s["status"]):
                reason = f"{s['name']}: {s['failure'] or 'no answer'}"
                failures[reason] = failures.get(reason, 0) + 1
        by_name: dict = {}
        for s in samples:
            if s["status"]:
                by_name.setdefault(s["name"], []).append(s["ms"])
        sent_ids = [s["request_id"] for s in samples if s["request_id"] and "/v1/" in s["name"]]
        audited = [json.loads(line)["request_id"] for line in audit.read_text(encoding="utf8").splitlines()]
        result.update({
            "requests": len(samples),
            "failures": sum(failures.values()),
            "failure_reasons": failures,
            "answers_by_status_and_kind": dict(sorted(answers.items())),
            "latency_ms": {
                "overall": _percentiles([s["ms"] for s in samples if s["status"]]),
                "by_request": {name: _percentiles(ms) for name, ms in sorted(by_name.items())},
            },
            "peak_rss_mb": round(peak.get("bytes", 0) / 2**20, 1),
            "rss_mb_first_last": [round(peak["samples"][0] / 2**20, 1), round(peak["samples"][-1] / 2**20, 1)] if peak.get("samples") else None,
            "audit": {"answers": len(sent_ids), "records": len(audited), "missing": len(set(sent_ids) - set(audited)),
                      "duplicate_records": len(audited) - len(set(audited))},
            "server_internal_errors_logged": stderr.read_text(errors="replace").count("internal error"),
        })  # fmt: skip
    result["machine"]["load_avg_end"] = os.getloadavg()
    name = f"service_load{'_' + args.name if args.name else ''}"
    path = provenance.write_result("load_test", result, ROOT / "bench" / "results" / f"{name}.json")
    print(json.dumps({k: result[k] for k in ("requests", "failures", "answers_by_status_and_kind", "peak_rss_mb", "audit")}, indent=2))
    print(f"p95 {result['latency_ms']['overall']['p95_ms']} ms; wrote {path}")
    ok = result["failures"] == 0 and result["audit"]["missing"] == 0 and result["audit"]["duplicate_records"] == 0 and not result["server_internal_errors_logged"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
