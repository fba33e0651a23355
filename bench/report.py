"""Print the Markdown tables of docs/BENCHMARKS.md from bench/results/*.json.

    python bench/report.py conll
"""
import json
import sys
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


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "conll")
