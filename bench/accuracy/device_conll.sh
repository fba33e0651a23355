#!/usr/bin/env bash
# bench/accuracy/conll_benchmark.py (python -m bench conll_benchmark) runs on the lent GPU machine (see docs/BENCHMARKS.md). That machine has no
# network and takes 64 MiB a call, so the stripped cp312 wheels travel in a first call (extracted to
# /tmp/w) and the backbone's weights, as fp16, in a second one; this script (second call) rebuilds the
# fp32 backbone directory and runs the benchmark with the arguments of each quoted run.
#   bash bench/accuracy/device_conll.sh "ner_plus_nolex" "ner_plus --name bc5cdr"
set -euo pipefail
export PYTHONPATH=/tmp/w/site:$PWD PYTHONUNBUFFERED=1
python3 - <<'PY'
import shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
out = Path("/tmp/backbone")
out.mkdir(exist_ok=True)
for f in Path(".dev/backbone").iterdir():
    shutil.copy(f, out / f.name)
weights = load_file(".dev/weights/model_fp16.safetensors")
save_file({k: v.float().contiguous() for k, v in weights.items()}, str(out / "model.safetensors"))
PY
for run in "$@"; do
    # shellcheck disable=SC2086
    python3 -m bench conll_benchmark $run --epochs 3 --gpu-id 0 --backbone /tmp/backbone
done
