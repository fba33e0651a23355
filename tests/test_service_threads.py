"""The service's thread defaults (``serve --threads auto``) and its batching without a wait:
the cores a process may use read from fake affinity and cgroup files, split among workers, and
a batcher that starts at once with what is queued."""
import threading
import time
from pathlib import Path

import pytest

from spacy_ner_plus.service.settings import ServeSettings, cgroup_cpu_limit, parse_threads, usable_cores, worker_threads


def _cgroup(tmp_path: Path, proc_line: str, files: dict) -> Path:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "proc_cgroup").write_text(proc_line)
    return root


def test_cgroup_v2_quota_is_read_from_the_process_cgroup_first(tmp_path):
    root = _cgroup(tmp_path, "0::/system.slice/ner.service\n", {"system.slice/ner.service/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(root, tmp_path / "proc_cgroup") == pytest.approx(1.5)


@pytest.mark.parametrize("text", ["max 100000\n", "max\n"])
def test_cgroup_v2_without_a_quota_is_no_limit(tmp_path, text):
    root = _cgroup(tmp_path, "0::/\n", {"cpu.max": text})
    assert cgroup_cpu_limit(root, tmp_path / "proc_cgroup") is None


def test_cgroup_v1_quota_and_its_absence(tmp_path):
    proc = "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n"
    root = _cgroup(tmp_path, proc, {"cpu/docker/abc/cpu.cfs_quota_us": "300000\n", "cpu/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(root, tmp_path / "proc_cgroup") == pytest.approx(3.0)
    (root / "cpu/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(root, tmp_path / "proc_cgroup") is None


def test_no_cgroup_files_is_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "nothing", tmp_path / "no_proc_file") is None


def test_usable_cores_is_the_affinity_capped_by_the_quota_rounded_down():
    assert usable_cores(affinity=8, cpu_limit=None) == 8
    assert usable_cores(affinity=8, cpu_limit=2.0) == 2
    assert usable_cores(affinity=8, cpu_limit=2.9) == 2  # a third thread would be throttled
    assert usable_cores(affinity=2, cpu_limit=16.0) == 2
    assert usable_cores(affinity=4, cpu_limit=0.5) == 1  # never 0


def test_usable_cores_reads_this_process_affinity(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cores(cpu_limit=None) == 3


def test_auto_threads_split_the_cores_among_workers_leaving_each_event_loop_a_core():
    assert worker_threads("auto", workers=1, cores=1) == 1
    assert worker_threads("auto", workers=1, cores=2) == 1  # torch 1 + event loop 1 = 2 cores
    assert worker_threads("auto", workers=1, cores=16) == 15
    assert worker_threads("auto", workers=2, cores=8) == 3  # 2 x (3 + 1) = 8
    assert worker_threads("auto", workers=3, cores=8) == 1  # 8 // 3 = 2 each: 1 + its loop
    assert worker_threads("auto", workers=4, cores=2) == 1  # at least one each
    assert worker_threads(3, workers=4, cores=2) == 3  # asked for: as given


def test_threads_setting_parses_auto_or_a_positive_number():
    assert ServeSettings(model="m").threads == "auto"
    assert parse_threads("auto") == "auto" and parse_threads(" AUTO ") == "auto" and parse_threads("3") == 3
    for bad in ("0", "-1", "two", "1.5", ""):
        with pytest.raises(ValueError, match="--threads takes auto or a whole number"):
            parse_threads(bad)


def test_serve_refuses_bad_threads_before_loading_anything(tmp_path):
    from typer.testing import CliRunner

    from spacy_ner_plus.cli import app

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.cfg").write_text("")
    result = CliRunner().invoke(app, ["serve", str(model), "--threads", "many"])
    assert result.exit_code == 1 and "--threads takes auto or a whole number >= 1, not 'many'" in result.output


class _Doc:
    def __init__(self, text):
        self.text = text

    def __len__(self):
        return len(self.text.split())


class _SlowNlp:
    """A Language's make_doc/pipe; each batch takes ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = threading.Event()

    def make_doc(self, text):
        return _Doc(text)

    def pipe(self, docs, batch_size=None):
        docs = list(docs)
        self.started.set()
        time.sleep(self.seconds)
        return iter(docs)


def test_batcher_without_a_wait_batches_what_queued_during_the_previous_batch():
    from spacy_ner_plus.service.batcher import MicroBatcher

    assert ServeSettings(model="m").batch_wait_ms == 0.0
    nlp = _SlowNlp(0.5)
    batches = []
    batcher = MicroBatcher(nlp, lambda doc: doc.text, batch_tokens=1000, max_wait_s=0.0, max_queue_chars=1000, on_batch=lambda n, _: batches.append(n))
    batcher.start()
    try:
        (first,) = batcher.submit(["alone"])
        assert nlp.started.wait(10)  # the first text did not wait for company
        later = [batcher.submit([f"text {i}"])[0] for i in range(3)]  # queued while it is predicted
        assert first.result(10) == "alone" and [f.result(10) for f in later] == ["text 0", "text 1", "text 2"]
        assert batches == [1, 3]  # the three share the next batch
    finally:
        batcher.close(5)
