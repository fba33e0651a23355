"""Quick Markdown tables of the latest runs in bench/results/NAME_*.json (not the docs' tables).

    python -m bench report conll          # one row per run
    python -m bench report conll --seeds  # one row per system: mean ± sd over its seeds, the per-seed F1

A quick look at the latest run of each result file; the tables of the docs are generated from the
ledger by ``python -m bench tables`` (bench/tables.py).
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(name: str) -> None:
    records = [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"{name}_*.json"))]
    if not records:
        sys.exit(f"no results for {name} in {RESULTS}")
    types = sorted({t for r in records for t in r["per_type"]})
    best_peer = max((r["f1"] for r in records if not r["system"].startswith("ner_plus")), default=None)
    print("| system | epochs | F1 | P | R | " + " | ".join(f"F1 {t}" for t in types) + " | train time | vs best peer | trained at / scored at |")
    print("| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in types) + " | ---: | ---: | --- |")
    for r in sorted(records, key=lambda r: -r["f1"]):
        delta = f"{100 * (r['f1'] - best_peer):+.2f}" if best_peer is not None else "-"
        cells = " | ".join(f"{100 * r['per_type'].get(t, 0):.2f}" for t in types)
        print(
            f"| {r['system']} | {r['epochs']} | {100 * r['f1']:.2f} | {100 * r['precision']:.2f} | {100 * r['recall']:.2f} | "
            f"{cells} | {r['train_seconds'] / 60:.1f} min | {delta} | {r.get('train_commit', r['commit'])} / {r['commit']} |"
        )
    print()
    for r in records:
        print(f"- {r['system']}: `{r['command']}` on {r['machine']}")


def seeds(name: str) -> None:
    """Mean ± sample standard deviation over seeds, per system; the best peer by mean."""
    runs = defaultdict(list)
    for p in sorted(RESULTS.glob(f"{name}_*.json")):
        r = json.loads(p.read_text())
        runs[r["system"]].append(r)
    types = sorted({t for rs in runs.values() for r in rs for t in r["per_type"]})

    def ms(values):
        values = [100 * v for v in values]
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"

    means = {system: statistics.mean(r["f1"] for r in rs) for system, rs in runs.items()}
    best_peer = max((m for system, m in means.items() if not system.startswith("ner_plus")), default=None)
    print("| system | seeds | F1 mean ± sd | per seed | " + " | ".join(f"F1 {t}" for t in types) + " | vs best peer mean |")
    print("| --- | --- | ---: | --- | " + " | ".join("---:" for _ in types) + " | ---: |")
    for system, rs in sorted(runs.items(), key=lambda item: -means[item[0]]):
        rs = sorted(rs, key=lambda r: r.get("seed", 0))
        per_seed = ", ".join(f"{r.get('seed', 0)}: {100 * r['f1']:.2f}" for r in rs)
        cells = " | ".join(ms([r["per_type"].get(t, 0) for r in rs]) for t in types)
        delta = f"{100 * (means[system] - best_peer):+.2f}" if best_peer is not None else "-"
        print(f"| {system} | {len(rs)} | {ms([r['f1'] for r in rs])} | {per_seed} | {cells} | {delta} |")


def cli(argv) -> int:
    name = next((a for a in argv if not a.startswith("--")), "conll")
    seeds(name) if "--seeds" in argv else main(name)
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
