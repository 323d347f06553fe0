#!/usr/bin/env bash
# Trains every default config and makes README's pictures and training times.
#   bash benchmarks/pictures.sh [RUNS_DIR [CONFIG ...]]
# writes docs/CONFIG.png (and docs/CONFIG_reconstruct.png for VAEs) and the wall times
# to docs/train_times.md; default: every config.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs/pictures}
shift || true
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(gan_ring8 gan_grid25 gan_mlp_mnist dcgan_mnist vae_mlp_mnist vae_conv_mnist)
mkdir -p "$runs" docs
echo "| config | steps | wall time (s) | final losses |" > docs/train_times.md
echo "|---|---|---|---|" >> docs/train_times.md
for name in "${configs[@]}"; do
  rm -rf "$runs/$name"
  start=$(date +%s.%N)
  python train.py --config "configs/$name.py" --workdir "$runs/$name" 2>/dev/null
  end=$(date +%s.%N)
  python sample.py --workdir "$runs/$name" --out "docs/$name.png" --num 64 --seed 0
  case $name in vae_*) python sample.py --workdir "$runs/$name" --out "docs/${name}_reconstruct.png" \
                         --num 16 --mode reconstruct;; esac
  python - "$runs/$name/metrics.jsonl" "$name" "$start" "$end" >> docs/train_times.md <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
last = rows[-1]
losses = ", ".join(f"{k} {v:.3g}" for k, v in last.items()
                   if k not in ("step", "steps_per_sec", "skipped_updates"))
print(f"| {sys.argv[2]} | {last['step']} | {float(sys.argv[4]) - float(sys.argv[3]):.0f} | {losses} |")
PY
done
cat docs/train_times.md
