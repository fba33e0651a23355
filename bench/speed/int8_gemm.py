"""How much faster int8 makes the backbone's matrix products on this CPU: the ceiling of int8 speed.

Times one nn.Linear of each MiniLM-L6-H384 shape (384->384 attention, 384->1536
and 1536->384 feed-forward) in fp32 against its dynamic int8 copy
(torch.ao.quantization.quantize_dynamic, per-channel weights) under each
quantized engine torch offers here, and against a per-row int8 product with
torch._int_mm (activations quantized per row, weights per channel, int32
accumulation, rescaled to fp32), on activations of M rows (M = wordpieces
in one batch of windows; 700 is a batch of 32 CoNLL++ sentences), in
torch.inference_mode. This machine's speed drifts from second to second, so
the calls are paired: fp32 then int8, 100 times after 10 warm-up pairs, and
the speedup is the median of the 100 per-pair ratios (times: medians).

    python -m bench int8_gemm [--rows 700]
"""
import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from bench import provenance

ROOT = Path(__file__).resolve().parents[2]
SHAPES = [(384, 384), (384, 1536), (1536, 384)]


class IntMMLinear(torch.nn.Module):
    """x -> (q(x) @ q(W)^T) * scales + b with one scale per activation row and weight row."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach()
        self.w_scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127
        self.w_q = (w / self.w_scale[:, None]).round().to(torch.int8).t().contiguous()
        self.bias = linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
        x_q = (x / x_scale).round().to(torch.int8)
        return torch.addcmul(self.bias, torch._int_mm(x_q, self.w_q), x_scale * self.w_scale)


def paired(fp32, int8, x, n=100):
    """Median fp32 and int8 milliseconds and the median per-pair speedup of n alternating calls."""
    pairs = []
    for i in range(n + 10):
        times = []
        for fn in (fp32, int8):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
        if i >= 10:
            pairs.append(times)
    median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return (round(1000 * median([a for a, _ in pairs]), 3), round(1000 * median([b for _, b in pairs]), 3),
            round(median([a / b for a, b in pairs]), 2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=700)
    args = parser.parse_args()
    torch.manual_seed(0)
    engines = [e for e in ("fbgemm", "onednn", "x86") if e in torch.backends.quantized.supported_engines]
    rows = []
    with torch.inference_mode():
        for k, n in SHAPES:
            linear = torch.nn.Sequential(torch.nn.Linear(k, n)).eval()
            x = torch.randn(args.rows, k)
            row = {"in": k, "out": n, "rows": args.rows}
            paths = {}
            for engine in engines:
                torch.backends.quantized.engine = engine
                paths[engine] = quantize_dynamic(copy.deepcopy(linear), {torch.nn.Linear: per_channel_dynamic_qconfig})
            paths["int_mm"] = IntMMLinear(linear[0])
            for name, int8 in paths.items():
                fp32_ms, row[f"{name}_ms"], row[f"{name}_speedup"] = paired(linear, int8, x, 20 if name == "int_mm" else 100)
                row[f"fp32_ms_beside_{name}"] = fp32_ms
            print(json.dumps(row), flush=True)
            rows.append(row)
    commit = provenance.commit()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    out = ROOT / "bench" / "results" / "int8_gemm.json"
    provenance.write_result("int8_gemm", {"command": "python -m bench int8_gemm --rows " + str(args.rows), "commit": commit, "machine": platform.node(),
                                          "cpu": cpu, "int8_dot_product_flags": [f for f in flags if "vnni" in f or "amx" in f],
                                          "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "rows": rows}, out)


if __name__ == "__main__":
    main()
