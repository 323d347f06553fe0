#!/usr/bin/env bash
# Trains default configs and makes README's pictures (docs/*.png) and training times.
#   bash benchmarks/pictures.sh [RUNS_DIR [CONFIG ...]]
# writes docs/CONFIG.png (and docs/CONFIG_reconstruct.png for VAEs) and puts each config's
# wall time and final losses in docs/train_times.md, replacing that config's row and
# keeping the others; default: every config in configs/ whose data ships with genjax (the
# configs of TFDS data sets, which need a download and a GPU, are left out).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs/pictures}
shift || true
configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
  for file in configs/[a-z]*.py; do
    grep -q '"tfds:' "$file" || configs+=("$(basename "$file" .py)")
  done
fi
mkdir -p "$runs" docs
for name in "${configs[@]}"; do
  rm -rf "${runs:?}/$name"
  start=$(date +%s.%N)
  python train.py --config "configs/$name.py" --workdir "$runs/$name" 2>/dev/null
  end=$(date +%s.%N)
  python sample.py --workdir "$runs/$name" --out "docs/$name.png" --num 64 --seed 0
  case $name in vae_*) python sample.py --workdir "$runs/$name" --out "docs/${name}_reconstruct.png" \
                         --num 16 --mode reconstruct;; esac
  python - "$runs/$name/metrics.jsonl" "$name" "$start" "$end" docs/train_times.md <<'PY'
import json, sys
from pathlib import Path
metrics, name, start, end, table = sys.argv[1:]
last = [json.loads(line) for line in open(metrics) if line.strip()][-1]
losses = ", ".join(f"{k} {v:.3g}" for k, v in last.items()
                   if k not in ("step", "steps_per_sec", "skipped_updates"))
row = f"| {name} | {last['step']} | {float(end) - float(start):.0f} | {losses} |"
path = Path(table)
old = path.read_text().splitlines()[2:] if path.exists() else []
rows = {line.split("|")[1].strip(): line for line in old if line.startswith("|")}
rows[name] = row
head = ["| config | steps | wall time (s) | final losses |", "|---|---|---|---|"]
path.write_text("\n".join(head + [rows[k] for k in sorted(rows)]) + "\n")
PY
done
cat docs/train_times.md
