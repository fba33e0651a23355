"""The benchmarks' entry point, ledger and generated tables (bench/; issue 27 part 4).

Nothing here trains or times anything: the ledger writer and the tables are tested on the
committed records.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench  # noqa: E402
from bench import provenance, tables  # noqa: E402
from bench.ledger import Ledger, LedgerError, import_history  # noqa: E402


def run_bench(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def topic_scripts():
    return sorted(p for topic in bench.TOPICS for p in (ROOT / "bench" / topic).glob("*.py") if p.name != "__init__.py")


def topic_files():
    """Every script under the topic folders: Python modules and shell drivers."""
    return sorted(p for topic in bench.TOPICS for p in (ROOT / "bench" / topic).iterdir()
                  if p.suffix in (".py", ".sh") and p.name != "__init__.py")


# --- one entry point ---------------------------------------------------------------------------


def test_every_script_in_a_topic_folder_is_registered_and_listed():
    out = run_bench("--list")
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0].rstrip(":") for line in out.stdout.splitlines() if line.startswith("  ")}
    scripts = topic_files()
    assert len(scripts) >= 25
    for path in scripts:
        module = f"{path.parent.name}.{path.stem}"
        relative = f"{path.parent.name}/{path.name}"
        if relative in bench.SUPPORT:
            assert f"bench/{relative}" in listed, f"python -m bench --list does not list bench/{relative}"
            continue
        assert path.suffix == ".py", f"bench/{relative} is neither an experiment nor in bench.SUPPORT"
        assert path.stem in bench.EXPERIMENTS, f"{path.relative_to(ROOT)} is not registered in bench.EXPERIMENTS (nor in bench.SUPPORT)"
        assert bench.EXPERIMENTS[path.stem].module == module, f"{path.stem}: registered as {bench.EXPERIMENTS[path.stem].module}, lives at {module}"
        assert path.stem in listed, f"python -m bench --list does not list {path.stem}"
    for relative in bench.SUPPORT:
        assert (ROOT / "bench" / relative).exists(), f"bench.SUPPORT names bench/{relative}, which does not exist"
    for name, experiment in bench.EXPERIMENTS.items():
        assert (ROOT / "bench" / Path(*experiment.module.split("."))).with_suffix(".py").exists(), f"{name}: {experiment.module} does not exist"
        assert experiment.description and "\n" not in experiment.description
    # nothing but the shared helpers lies loose in bench/
    loose = {p.name for p in (ROOT / "bench").glob("*.py")}
    assert loose == {"__init__.py", "__main__.py", "provenance.py", "ledger.py", "tables.py", "report.py", "register_package.py"}
    for topic in bench.TOPICS:
        assert (ROOT / "bench" / topic).is_dir(), topic


def test_scripts_import_each_other_through_the_bench_package():
    """A script run as ``python -m bench NAME`` finds its siblings as bench.<topic>.<name>; the old
    ``import provenance`` (bench/ on sys.path) would fail there."""
    known = {f"bench.{e.module}" for e in bench.EXPERIMENTS.values()} | {"bench", "bench.provenance", "bench.ledger", "bench.tables", "bench.report"}
    known |= {f"bench.{topic}" for topic in bench.TOPICS}
    siblings = set(bench.EXPERIMENTS) | {"provenance", "report"}
    for path in topic_scripts():
        tree = ast.parse(path.read_text(encoding="utf8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] not in siblings, f"{path.name}: import {alias.name} (use from bench... import)"
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in siblings, f"{path.name}: from {node.module} import (use bench.{node.module})"
                if node.module.startswith("bench"):
                    assert node.module in known, f"{path.name}: from {node.module}: no such bench module"
                    for alias in node.names:
                        if node.module in ("bench",) or node.module.count(".") == 1 and node.module.split(".")[1] in bench.TOPICS:
                            assert f"{node.module}.{alias.name}" in known, f"{path.name}: {node.module}.{alias.name} does not exist"


def test_a_script_that_imports_its_siblings_runs_through_the_entry_point():
    """calibration_variants imports calibration_benchmark and provenance from the bench package;
    --help parses its options without running anything."""
    out = run_bench("calibration_variants", "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--fold-draws" in out.stdout and "--join-touching" in out.stdout


def test_a_script_gets_its_own_options_through_the_entry_point():
    out = run_bench("report", "conll", "--seeds")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("| system | seeds | F1 mean ± sd |")
    assert "spacy_trf_ner_recipe" in out.stdout


def test_an_unknown_experiment_is_refused_by_name():
    out = run_bench("conll_bench")
    assert out.returncode == 2
    assert "no experiment named 'conll_bench'" in out.stderr and "conll_benchmark" in out.stderr


def test_every_result_file_belongs_to_an_experiment():
    for path in (ROOT / "bench" / "results").iterdir():
        if path.is_file():
            assert bench.experiment_of_result(path.stem) in bench.EXPERIMENTS
    assert bench.experiment_of_result("calibration_variants_conll_bioes_seed0") == "calibration_variants"
    assert bench.experiment_of_result("calibration_conll_lora") == "calibration_benchmark"
    with pytest.raises(KeyError, match="no experiment"):
        bench.experiment_of_result("something_else")


# --- the ledger ----------------------------------------------------------------------------------


def test_write_result_appends_a_record_and_never_overwrites_one(tmp_path, monkeypatch):
    config = tmp_path / "a.cfg"
    config.write_text("[training]\nseed = 1\n")
    latest = tmp_path / "results" / "demo_seed1.json"
    numbers = {"f1": 0.5, "seed": 1}
    first = provenance.write_result("conll_benchmark", numbers, latest, configs=[config], ledger=tmp_path / "ledger")
    record = json.loads(first.read_text())
    assert first.parent == tmp_path / "ledger" / "conll_benchmark"
    assert record["experiment"] == "conll_benchmark" and record["name"] == "demo_seed1" and record["source"] == "run"
    assert record["seed"] == 1 and record["numbers"] == numbers
    assert len(record["config_hash"]) == 64 and list(record["configs"].values())[0] == __import__("hashlib").sha256(config.read_bytes()).hexdigest()
    assert record["machine"]["cpu_count"] == os.cpu_count() and record["machine"]["cpu_model"]
    assert set(record["load_average"]) == {"start", "end"}
    assert record["commit"] == provenance.START["commit"] and isinstance(record["dirty"], bool)
    assert json.loads(latest.read_text()) == numbers
    # a second run: a second record; the first is untouched
    second = provenance.write_result("conll_benchmark", {"f1": 0.6, "seed": 1}, latest, ledger=tmp_path / "ledger")
    assert second != first and json.loads(first.read_text())["numbers"] == numbers
    assert len(list((tmp_path / "ledger" / "conll_benchmark").glob("*.json"))) == 2
    # the same file name again (a clock that did not move): refused, the record unchanged
    monkeypatch.setattr(provenance, "utc_now", lambda: record["timestamp"])
    with pytest.raises(FileExistsError, match="never overwritten"):
        provenance.write_result("conll_benchmark", {"f1": 0.9}, latest, ledger=tmp_path / "ledger")
    assert json.loads(first.read_text())["numbers"] == numbers
    with pytest.raises(FileExistsError):
        provenance.write_new(first, {"x": 1})


def _shallow() -> bool:
    out = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], capture_output=True, text=True, cwd=ROOT)
    return out.returncode != 0 or out.stdout.strip() != "false"


@pytest.mark.skipif(_shallow(), reason="needs the full git history of bench/results (a shallow clone or no git)")
def test_import_history_is_idempotent_and_refuses_to_rewrite_a_record(tmp_path):
    path = "bench/results/mini_rule.json"
    counts = import_history(tmp_path, [path])
    assert counts["written"] >= 2 and counts["present"] == 0  # the BIO run (01c23f9), the BIOES run that replaced it, any later
    assert import_history(tmp_path, [path]) == {"written": 0, "present": counts["written"]}
    records = Ledger.read(tmp_path).select("mini_rule")
    assert [r["commit"] for r in records][:2] == ["01c23f9", "c685759"]
    assert all(r["source"] == "git history" and r["history_commit"] for r in records)
    target = tmp_path / records[0]["_path"]
    edited = json.loads(target.read_text())
    edited["numbers"]["chosen_on_dev"] = "LOC only"
    target.write_text(json.dumps(edited))
    with pytest.raises(LedgerError, match="other content"):
        import_history(tmp_path, [path])


@pytest.mark.skipif(_shallow(), reason="needs the full git history of bench/results (a shallow clone or no git)")
def test_import_history_skips_a_version_a_run_already_recorded(tmp_path):
    """A run writes its record and the latest-run file; once that file is committed, importing the
    history must not file the same numbers a second time."""
    current = json.loads((ROOT / "bench" / "results" / "mini_rule.json").read_text())
    provenance.write_result("mini_rule", current, name="mini_rule", ledger=tmp_path)
    counts = import_history(tmp_path, ["bench/results/mini_rule.json"])
    records = Ledger.read(tmp_path).select("mini_rule")
    assert [r["source"] for r in records].count("run") == 1
    assert all(r["numbers"] != current for r in records if r["source"] == "git history")
    assert counts["present"] >= 1 and counts["written"] == len(records) - 1


def test_the_committed_ledger_holds_every_committed_result_version():
    ledger = Ledger.read()
    names = {r["name"] for r in ledger.records}
    for path in (ROOT / "bench" / "results").iterdir():
        if path.is_file():
            assert path.stem in names, f"no ledger record of {path.name}: run python -m bench import-history"
    # the numbers the issue found cited from replaced files
    assert {round(100 * r["numbers"]["f1"], 2) for r in ledger.select("conll_ner_plus")} >= {87.66, 87.86, 87.73}
    assert ledger.one("bc5cdr_ner_plus", commit="243dcb6")["numbers"]["machine"].endswith("NVIDIA H200")
    with pytest.raises(LedgerError, match="different ledger records"):
        ledger.one("conll_ner_plus")


# --- generated tables ------------------------------------------------------------------------------


def test_tables_check_passes_on_the_committed_tree():
    out = run_bench("tables", "--check")
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_table_renders_from_the_committed_ledger_and_names_its_records():
    ledger = Ledger.read()
    for name, fn in tables.TABLES.items():
        text = fn(ledger)
        lines = text.split("\n")
        assert lines[0].startswith("| ") and lines[1].startswith("| ---"), name
        assert lines[-1].startswith("Generated by `python -m bench tables` from the ledger records `"), name


def test_tables_check_fails_with_a_diff_when_a_table_drifts(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("Prose stays.\n\n<!-- bench-table: lora-sweep -->\n| stale |\n<!-- /bench-table -->\n\nMore prose.\n", encoding="utf8")
    out = run_bench("tables", "--check", str(doc))
    assert out.returncode == 1
    assert "-| stale |" in out.stdout and "+| **3e-3** | **86.20** | model-last |" in out.stdout
    assert "| stale |" in doc.read_text()  # --check writes nothing
    assert run_bench("tables", str(doc)).returncode == 0
    text = doc.read_text()
    assert text.startswith("Prose stays.\n") and text.endswith("<!-- /bench-table -->\n\nMore prose.\n")
    assert "lora_sweep_conll@947c44e" in text
    assert run_bench("tables", "--check", str(doc)).returncode == 0


def test_an_indented_block_stays_inside_its_list_item():
    ledger = Ledger.read()
    text = "- item:\n\n  <!-- bench-table: int8-gemm -->\n  <!-- /bench-table -->\n"
    out = tables.render(text, ledger, "x.md")
    body = out.split("\n")[2:-2]
    assert all(line.startswith("  ") or not line for line in body) and "  | product (in → out) |" in out


def test_a_bad_block_is_an_error_naming_file_and_line():
    ledger = Ledger.read()
    with pytest.raises(LedgerError, match=r"x\.md:3: unknown table 'no-such-table'"):
        tables.render("a\n\n<!-- bench-table: no-such-table -->\n<!-- /bench-table -->\n", ledger, "x.md")
    with pytest.raises(LedgerError, match="closed"):
        tables.render("<!-- bench-table: lora-sweep -->\n| x |\n", ledger, "x.md")


def test_historical_tables_cite_the_record_they_pin_and_say_the_config():
    ledger = Ledger.read()
    seed0 = tables.TABLES["conll-seed0"](ledger)
    assert "| ner_plus | 3 | 87.66 |" in seed0 and "measured with BIO" in seed0
    speed = tables.TABLES["inference-speed"](ledger)
    assert "with the BIO CoNLL pipeline" in speed and "inference_speed@0a26e76" in speed
    assert "| `ner_plus` | BC5CDR | 78.19 |" in tables.TABLES["conll-gpu"](ledger)
    summary = tables.TABLES["readme-summary"](ledger)
    assert "87.84 ± 0.25 (3 seeds)" in summary and "86.72 ± 0.23 (3 seeds)" in summary and "+9.02" in summary and "2.45x" in summary


def test_a_record_of_an_older_config_says_so_in_its_table(tmp_path):
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "x.cfg"
    config.write_text("[a]\nb = 1\n")
    record = {"name": "demo", "commit": "abc1234", "_path": "demo/1.json", "configs": provenance.config_hashes([config])}
    record["configs"] = {"configs/x.cfg": record["configs"].popitem()[1]}
    assert tables.config_notes([record], root=tmp_path) == []
    config.write_text("[a]\nb = 2\n")
    (note,) = tables.config_notes([record], root=tmp_path)
    assert note.startswith("`demo@abc1234` was measured with an older `configs/x.cfg`") and "has changed since" in note
    config.unlink()
    assert "no longer exists" in tables.config_notes([record], root=tmp_path)[0]


def test_a_new_run_changes_a_latest_table_but_not_a_pinned_one():
    ledger = Ledger.read()
    before_pinned, before_latest = tables.TABLES["mini-rule-bio"](ledger), tables.TABLES["mini-rule"](ledger)
    newest = ledger.latest("mini_rule")
    numbers = json.loads(json.dumps(newest["numbers"]))
    numbers["splits"]["dev"]["none"]["micro"]["f1"] = 0.5
    numbers["commit"] = "fffffff"
    ledger.records.append({**newest, "numbers": numbers, "commit": "fffffff", "source": "run", "timestamp": "2099-01-01T00:00:00Z", "_path": "mini_rule/new.json"})
    assert tables.TABLES["mini-rule-bio"](ledger) == before_pinned
    after = tables.TABLES["mini-rule"](ledger)
    assert after != before_latest and "| no rule | 89.61 | 88.06 | 50.00 |" in after and "mini_rule@fffffff" in after


# --- request_overhead --quick (issue 30): the script runs end to end; its numbers mean nothing here ---


@pytest.mark.slow
def test_request_overhead_quick_writes_every_target_with_its_ratio(trained_nlp, tmp_path):
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    model = tmp_path / "model"
    trained_nlp.to_disk(model)
    out_dir = tmp_path / "results"
    run = run_bench("request_overhead", str(model), "--quick", "--threads", "1", "--out-dir", str(out_dir), "--name", "quick")
    assert run.returncode == 0, run.stderr[-3000:]
    numbers = json.loads((out_dir / "request_overhead_quick.json").read_text())
    assert numbers["quick"] is True and numbers["texts"]["n"] == 8 and numbers["threads"]["torch_threads"] == 1
    assert 300 <= numbers["texts"]["mean_chars"] <= 800
    inproc, service = numbers["in_process"], numbers["service"]
    assert inproc["bare_forward"]["n"] == inproc["nlp"]["n"] == 8 and inproc["pipe"]["texts_per_s"] > 0
    assert service["sequential"]["ok"] == 8 and service["sequential"]["concurrency"] == 1 and not service["sequential"]["errors"]
    assert service["concurrent"]["concurrency"] == 4 and service["concurrent"]["ok"] == 16 and not service["concurrent"]["errors"]
    targets = numbers["targets"]
    assert set(targets) == {"service_p50_over_inprocess_p50", "service_p95_over_service_p50", "concurrent_over_pipe_throughput"}
    p50 = service["sequential"]["p50_ms"]
    assert targets["service_p50_over_inprocess_p50"]["ratio"] == pytest.approx(p50 / inproc["nlp"]["p50_ms"], rel=1e-3)
    assert targets["service_p50_over_inprocess_p50"]["met"] == (targets["service_p50_over_inprocess_p50"]["ratio"] <= 1.25)
    assert targets["concurrent_over_pipe_throughput"]["met"] == (targets["concurrent_over_pipe_throughput"]["ratio"] >= 0.9)
    records = list((out_dir / "ledger" / "request_overhead").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["numbers"] == numbers
    assert "service_p50_over_inprocess_p50" in run.stdout
