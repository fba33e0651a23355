"""The calibration report: calibration.json, calibration.md, a reliability diagram and the
per-type threshold curves, written after ``evaluation.calibrate.calibrate_pipeline``."""
from typing import Dict, Tuple

import numpy

from ..calibration import TypeCalibration, threshold_curve
from ..metrics import N_BINS, brier, ece


def report_data(results: Dict[str, TypeCalibration]) -> Dict:
    """Overall and per-type ECE, Brier, threshold and its precision/recall trade-off on DEV."""
    raw = numpy.concatenate([r.raw for r in results.values()]) if results else numpy.zeros(0)
    cal = numpy.concatenate([r.calibrated for r in results.values()]) if results else numpy.zeros(0)
    ok = numpy.concatenate([r.correct for r in results.values()]) if results else numpy.zeros(0, dtype=bool)
    return {
        "n_bins": N_BINS,
        "overall": {
            "n_predicted": int(len(raw)),
            "ece_before": ece(raw, ok),
            "ece_after": ece(cal, ok),
            "brier_before": brier(raw, ok),
            "brier_after": brier(cal, ok),
        },
        "per_type": {label: r.summary() for label, r in results.items()},
    }


def plot_reliability(curves: Dict[str, Tuple[numpy.ndarray, numpy.ndarray]], path, data_name: str) -> None:
    """A reliability diagram (N_BINS equal-width bins): per curve name, (scores, exactly right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    for name, (scores, correct) in curves.items():
        scores = numpy.asarray(scores, dtype="float64")
        ok = numpy.asarray(correct, dtype="float64")
        bins = numpy.minimum((scores * N_BINS).astype(int), N_BINS - 1)
        xs = [scores[bins == b].mean() for b in range(N_BINS) if (bins == b).any()]
        ys = [ok[bins == b].mean() for b in range(N_BINS) if (bins == b).any()]
        ax.plot(xs, ys, "o-", label=f"{name} (ECE {ece(scores, ok):.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("share of exactly right entities")
    ax.set_title(f"Reliability on {data_name}, {N_BINS} bins")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: Dict[str, TypeCalibration], out_dir) -> Dict:
    """Write calibration.json, calibration.md, reliability.png and thresholds.png to ``out_dir``."""
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report_data(results)
    (out / "calibration.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf8")

    ok = numpy.concatenate([r.correct for r in results.values()]) if results else numpy.zeros(0, dtype=bool)
    plot_reliability(
        {name: (numpy.concatenate([getattr(r, attr) for r in results.values()]), ok) for name, attr in (("before", "raw"), ("after", "calibrated"))},
        out / "reliability.png",
        "DEV",
    )

    n = max(1, len(results))
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.5), squeeze=False)
    for ax, (label, r) in zip(axes[0], results.items()):
        if len(r.calibrated):
            curve = threshold_curve(r.calibrated, r.correct, r.n_gold)
            for key in ("precision", "recall", "f1"):
                ax.plot(curve["threshold"], curve[key], label=key)
        ax.axvline(r.threshold, color="k", linestyle="--", label=f"chosen {r.threshold:.2f}")
        ax.set_title(f"{label} ({r.policy})" + (f", bias {r.decoding_bias:g}" if r.decoding_bias else ""))
        ax.set_xlabel("threshold (calibrated)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "thresholds.png", dpi=100)
    plt.close(fig)

    o = data["overall"]
    lines = [
        "# Calibration report (DEV)",
        "",
        f"ECE ({N_BINS} equal-width bins) {o['ece_before']:.4f} -> {o['ece_after']:.4f}; "
        f"Brier {o['brier_before']:.4f} -> {o['brier_after']:.4f}; {o['n_predicted']} predicted entities.",
        "",
        "| type | method | policy | decoding bias | threshold | ECE before | ECE after | Brier before | Brier after | P all -> kept | R all -> kept |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for label, s in data["per_type"].items():
        lines.append(
            f"| {label} | {s['method']} | {s['policy']} | {s['decoding_bias']:g} | {s['threshold']:.3f} | {s['ece_before']:.4f} | {s['ece_after']:.4f} | "
            f"{s['brier_before']:.4f} | {s['brier_after']:.4f} | {s['precision_all']:.3f} -> {s['precision_kept']:.3f} | "
            f"{s['recall_all']:.3f} -> {s['recall_kept']:.3f} |"
        )
    lines += ["", "## Trade-offs", ""]
    for label, s in data["per_type"].items():
        gain = s["precision_kept"] - s["precision_all"]
        cost = s["recall_all"] - s["recall_kept"]
        lines.append(
            f"- **{label}**: entities scoring below {s['threshold']:.3f} leave `doc.ents` (they stay in `doc.spans`). "
            f"On DEV this raises precision by {gain:+.3f} (to {s['precision_kept']:.3f}) and costs {cost:.3f} recall "
            f"(to {s['recall_kept']:.3f})." + ("" if not s["notes"] else " Note: " + "; ".join(s["notes"]) + ".")
        )
    for label, s in data["per_type"].items():
        if not s["bias_search"]:
            continue
        lines += [
            "",
            f"## Decoding bias of {label} ({s['policy']})",
            "",
            "Thresholds only remove decoded entities, so the biases below were tried on DEV "
            "(added to the log-probabilities of the type's tags before decoding; "
            f"chosen: {s['decoding_bias']:g}). Recall bound: what the policy compares with its target "
            "(the bootstrap lower bound when there is one).",
            "",
            "| bias | predicted | threshold | precision | recall | recall bound | reached |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        lines += [
            f"| {row['bias']:g} | {row['n_predicted']} | {row['threshold']:.3f} | {row['precision']:.3f} | {row['recall']:.3f} | "
            f"{row['recall_bound']:.3f} | {'yes' if row['reached'] else 'no'} |"
            for row in s["bias_search"]
        ]
    lines += ["", "![reliability](reliability.png)", "", "![thresholds](thresholds.png)", ""]
    (out / "calibration.md").write_text("\n".join(lines), encoding="utf8")
    return data
