#!/usr/bin/env bash
# Throughput tables on a GPU: the configs of throughput.py's `all` at their
# own settings in float32 and in bfloat16; the GPU configs, sngan_cifar10 and dcgan_celeba64,
# at their own settings in bfloat16 on random data of their shapes (their data sets need a
# download); and DCGAN at 64x64x3 (random data), batch 256. Its time on a GPU has not been
# measured; the GPU configs' table is cut off at 480 s, each of the others at 240 s.
#
#   benchmarks/gpu.sh OUT_DIR          # OUT_DIR/NAME.{json,md} per table; all in throughput.md
#   benchmarks/gpu.sh OUT_DIR --quick  # a smoke test of this script that runs on a CPU
#
# --quick: two small configs, and the GPU configs at batch 2, one step per call.
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

configs='' big_batch=256 args=() devices=1 gpu_configs=sngan_cifar10,dcgan_celeba64 gpu_args=()
if [[ "$quick" == "--quick" ]]; then
  configs=gan_ring8,vae_mlp_mnist big_batch=8 args=(--quick) gpu_args=(--batch 2 --steps_per_call 1)
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
  configs=all
fi
if python -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2> /dev/null; then
  if ((devices == 1)); then
    args+=(--torch)
  else
    echo "$devices GPUs (CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES): no PyTorch columns" >&2
  fi
fi

failed=()
table() {  # table NAME SECONDS ARGS...: one throughput.py run -> OUT_DIR/NAME.{json,md}
  local name=$1 seconds=$2 status=0
  shift 2
  echo "== $name" >&2
  rm -f "$out/$name".{json,md}{,.tmp}
  timeout "$seconds" python benchmarks/throughput.py "$@" ${args[@]+"${args[@]}"} \
    --json "$out/$name.json" --markdown "$out/$name.md" > /dev/null || status=$?
  if ((status == 124)); then
    failed+=("$name (timed out after $seconds s)")
  elif ((status != 0)); then
    failed+=("$name (exit $status)")
  fi
}

names=(configs_float32 configs_bfloat16 gpu_configs_bfloat16 dcgan64_bfloat16 dcgan64_float32)
table configs_float32 240 --config "$configs" --dtype float32
table configs_bfloat16 240 --config "$configs" --dtype bfloat16
table gpu_configs_bfloat16 480 --config "$gpu_configs" --dtype bfloat16 \
  ${gpu_args[@]+"${gpu_args[@]}"}
dcgan64=(--config dcgan_mnist --data_shape 64,64,3 --batch "$big_batch")
table dcgan64_bfloat16 240 "${dcgan64[@]}" --dtype bfloat16
table dcgan64_float32 240 "${dcgan64[@]}" --dtype float32

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
