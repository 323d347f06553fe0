#!/usr/bin/env bash
# Throughput tables on a GPU: every config at its own settings in float32 and in bfloat16,
# and DCGAN at 64x64x3 (random data), batch 256. It is meant to take under 5 minutes on one
# GPU; that is an estimate, not a measurement. Each of its four tables is cut off at 240 s.
#
#   benchmarks/gpu.sh OUT_DIR          # OUT_DIR/NAME.{json,md} per table; all in throughput.md
#   benchmarks/gpu.sh OUT_DIR --quick  # a smoke test of this script that runs on a CPU
#
# Needs a JAX that sees the GPU: pip install -e '.[gpu]' (the CUDA 12 wheels); it stops at
# once if jax.default_backend() is not 'gpu'. Runs on one GPU, CUDA_VISIBLE_DEVICES=0 unless
# you set it (the PyTorch reference uses one device). The PyTorch columns appear when torch
# sees a CUDA device (pip install -e '.[bench]' gives a CPU build on machines without CUDA
# wheels; then the tables have genjax alone). A table that fails or times out keeps the rows
# it measured; the others still run, and the script exits 1 at the end naming it. The runs
# share one XLA compilation cache, OUT_DIR/xla-cache (or JAX_COMPILATION_CACHE_DIR).
set -euo pipefail

out=${1:?usage: benchmarks/gpu.sh OUT_DIR [--quick]}
quick=${2:-}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # before the cd below
cd "$(dirname "$0")/.."
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # leave room for torch on the same GPU
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-0}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$out/xla-cache}

configs=all big_batch=256 args=() devices=1
if [[ "$quick" == "--quick" ]]; then
  configs=gan_ring8,vae_mlp_mnist big_batch=8 args=(--quick)
elif [[ -n "$quick" ]]; then
  echo "unknown option $quick; usage: benchmarks/gpu.sh OUT_DIR [--quick]" >&2
  exit 2
else
  found=$(python -c "import jax; print(jax.default_backend(), jax.device_count())" 2> /dev/null \
    || echo "none 0")
  read -r backend devices <<< "$found"
  if [[ "$backend" != gpu ]]; then
    echo "benchmarks/gpu.sh: JAX sees no GPU (backend: $backend); install the CUDA wheels:" \
      "pip install -e '.[gpu]' (or use --quick for the CPU smoke test)" >&2
    exit 2
  fi
fi
if python -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2> /dev/null; then
  if ((devices == 1)); then
    args+=(--torch)
  else
    echo "$devices GPUs (CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES): no PyTorch columns" >&2
  fi
fi

failed=()
table() {  # table NAME ARGS...: one throughput.py run -> OUT_DIR/NAME.{json,md}
  local name=$1 status=0
  shift
  echo "== $name" >&2
  rm -f "$out/$name".{json,md}{,.tmp}
  timeout 240 python benchmarks/throughput.py "$@" ${args[@]+"${args[@]}"} \
    --json "$out/$name.json" --markdown "$out/$name.md" > /dev/null || status=$?
  if ((status == 124)); then
    failed+=("$name (timed out after 240 s)")
  elif ((status != 0)); then
    failed+=("$name (exit $status)")
  fi
}

names=(configs_float32 configs_bfloat16 dcgan64_bfloat16 dcgan64_float32)
table configs_float32 --config "$configs" --dtype float32
table configs_bfloat16 --config "$configs" --dtype bfloat16
dcgan64=(--config dcgan_mnist --data_shape 64,64,3 --batch "$big_batch")
table dcgan64_bfloat16 "${dcgan64[@]}" --dtype bfloat16
table dcgan64_float32 "${dcgan64[@]}" --dtype float32

for name in "${names[@]}"; do
  printf '## %s\n\n' "$name"
  cat "$out/$name.md" 2> /dev/null || printf 'no rows\n'
  echo
done > "$out/throughput.md"
if ((${#failed[@]})); then
  printf -v list '%s; ' "${failed[@]}"
  printf 'Failed or cut short (the rows measured before are kept): %s\n' "${list%; }" \
    >> "$out/throughput.md"
fi
cat "$out/throughput.md"
if ((${#failed[@]})); then
  printf 'benchmarks/gpu.sh: failed or cut short: %s\n' "${list%; }" >&2
  exit 1
fi
