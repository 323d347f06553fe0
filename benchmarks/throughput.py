"""Training throughput of the compiled call train.py runs: ms/step, examples/s, FLOPs and MFU.

python benchmarks/throughput.py --config all [--batch B] [--steps_per_call K] [--dtype D]
    [--data_shape 64,64,3] [--torch] [--json FILE] [--markdown FILE] [--quick]

Per config (configs/NAME.py) the call is built as genjax.train.Trainer builds it
(experiment.build + make_chunk with the config's data path + DataParallel.compile) on the
config's embedded data set, or on random data of --data_shape. Steady-state time is the
median of --calls timed calls after --warmup, each ending in block_until_ready; with --torch
the PyTorch eager reference (benchmarks/torch_reference.py) is timed in alternation with it,
so the ratio holds under a changing machine load. FLOPs per step come from XLA's cost
analysis of the compiled call; the peak is a large matmul in the same dtype, timed here.
Examples per step = batch_size (the generator's batch for GANs, whatever n_critic is).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from genjax import experiment  # noqa: E402
from genjax.config import validate  # noqa: E402
from genjax.data import resolve_sources  # noqa: E402
from genjax.parallel import DataParallel  # noqa: E402
from genjax.train import make_chunk  # noqa: E402

CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if p.stem != "__init__")
RANDOM_EXAMPLES = 2048  # size of the random on-device data set used with --data_shape


def load_config(name: str, args):
    """configs/NAME.py's config with the command line's overrides, validated."""
    config = importlib.import_module(f"configs.{name}").get_config()
    for key in ("batch_size", "steps_per_call", "dtype"):
        value = getattr(args, "batch" if key == "batch_size" else key)
        if value is not None:
            config[key] = value
    validate(config)
    return config


def train_arrays(config, data_shape: tuple | None) -> dict:
    """The config's training set ({'image' | 'point': (N, ...)}) or random data of data_shape."""
    if data_shape is None:
        arrays = resolve_sources(config.data)[0].to_arrays()
        return {k: v for k, v in arrays.items() if k in ("image", "point")}
    rng = np.random.default_rng(0)
    if len(data_shape) == 1:
        return {"point": rng.normal(size=(RANDOM_EXAMPLES, *data_shape)).astype(np.float32)}
    return {"image": rng.integers(0, 256, (RANDOM_EXAMPLES, *data_shape), dtype=np.uint8)}


def compiled_call(config, arrays: dict):
    """(compiled call, state, data, key, compile seconds): genjax.train.Trainer's chunk."""
    exp = experiment.build(config, next(iter(arrays.values())).shape[1:])
    parallel = DataParallel(config.parallel)
    length, per_step = config.steps_per_call, exp.data_per_step
    fn = make_chunk(exp.step(), length, config.data.on_device, per_step, config.batch_size)
    jitted = parallel.compile(fn, data_sharded=not config.data.on_device, batch_axis=2)
    state = parallel.replicate(exp.init_state(jax.random.PRNGKey(config.seed)))
    if config.data.on_device:
        data = parallel.replicate(arrays)
    else:  # one fixed set of host batches, reused: the host pipeline is not timed
        idx = np.random.default_rng(0).integers(
            0, len(next(iter(arrays.values()))), (length, per_step, config.batch_size)
        )
        data = parallel.shard_batch({k: v[idx] for k, v in arrays.items()}, batch_axis=2)
    key = jax.random.PRNGKey(config.seed)
    start = time.perf_counter()
    compiled = jitted.lower(state, data, key).compile()
    return compiled, state, data, key, time.perf_counter() - start


def loop_body_counted_once() -> bool:
    """Whether XLA's cost analysis counts a while loop's body once (not times its trip count)."""
    x = jnp.ones((8, 8))
    loop = jax.jit(lambda x: jax.lax.fori_loop(0, 4, lambda i, c: c @ x, x))
    return cost_flops(loop.lower(x).compile()) < 3 * 2 * 8**3


def cost_flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list | tuple) else analysis
    return float((analysis or {}).get("flops", float("nan")))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_flops_per_s(dtype: str, quick: bool, cache: dict = {}) -> float:  # noqa: B006
    """FLOP/s of a large n x n matmul in `dtype` on the default device (median of 5 calls)."""
    if dtype not in cache:
        cpu = jax.default_backend() == "cpu"
        n = 512 if quick else (2048 if cpu else 8192)
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
        matmul = jax.jit(lambda a: a @ a)
        for _ in range(2):
            matmul(a).block_until_ready()
        seconds = statistics.median(timed(lambda: matmul(a).block_until_ready()) for _ in range(5))
        cache[dtype] = 2 * n**3 / seconds
    return cache[dtype]


def torch_reference_call(config, arrays: dict, steps: int):
    """benchmarks/torch_reference.py's call on this backend's device, or None if torch lacks it."""
    from benchmarks import torch_reference

    device = {"cpu": "cpu", "gpu": "cuda"}.get(jax.default_backend())
    if device is None or (device == "cuda" and not torch_reference.torch.cuda.is_available()):
        print(f"no torch reference on {jax.default_backend()}", file=sys.stderr)
        return None
    return torch_reference.make_call(config, arrays, steps, device)


def measure(name: str, args, data_shape: tuple | None) -> dict:
    """One config's row: compile time, steady-state step time, FLOPs, MFU (and torch)."""
    config = load_config(name, args)
    arrays = train_arrays(config, data_shape)
    call, state, data, key, compile_s = compiled_call(config, arrays)
    k = config.steps_per_call
    flops_per_call = cost_flops(call)
    flops = flops_per_call if loop_body_counted_once() else flops_per_call / k
    box = {"state": state}

    def genjax_call():
        box["state"], metrics = call(box["state"], data, key)
        jax.block_until_ready((box["state"], metrics))

    torch_call = torch_reference_call(config, arrays, k) if args.torch else None
    for _ in range(args.warmup):
        genjax_call()
        if torch_call:
            torch_call()
    genjax_s, torch_s = [], []
    for _ in range(args.calls):  # alternate, so that load changes hit both alike
        genjax_s.append(timed(genjax_call) / k)
        if torch_call:
            torch_s.append(timed(torch_call) / k)
    step_s = statistics.median(genjax_s)
    peak = peak_flops_per_s(config.dtype, args.quick)
    row = {
        "config": name,
        "batch": config.batch_size,
        "dtype": config.dtype,
        "steps_per_call": k,
        "data_shape": list(next(iter(arrays.values())).shape[1:]),
        "compile_s": compile_s,
        "step_ms": 1e3 * step_s,
        "examples_per_s": config.batch_size / step_s,
        "flops_per_step": flops,
        "flops_per_s": flops / step_s,
        "peak_flops_per_s": peak,
        "mfu": flops / step_s / peak,
        "spread": (max(genjax_s) - min(genjax_s)) / step_s,
    }
    if torch_call:
        torch_step_s = statistics.median(torch_s)
        row["torch_examples_per_s"] = config.batch_size / torch_step_s
        row["speedup_vs_torch"] = torch_step_s / step_s
    return row


COLUMNS = [  # (header, key, format)
    ("config", "config", "{}"),
    ("batch", "batch", "{}"),
    ("dtype", "dtype", "{}"),
    ("K", "steps_per_call", "{}"),
    ("compile s", "compile_s", "{:.1f}"),
    ("ms/step", "step_ms", "{:.3g}"),
    ("examples/s", "examples_per_s", "{:,.0f}"),
    ("GFLOP/step", "flops_per_step", "{:.3g}", 1e-9),
    ("GFLOP/s", "flops_per_s", "{:.3g}", 1e-9),
    ("MFU", "mfu", "{:.1%}"),
    ("torch ex/s", "torch_examples_per_s", "{:,.0f}"),
    ("vs torch", "speedup_vs_torch", "{:.2f}x"),
]


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table (torch columns only when measured)."""
    cols = [c for c in COLUMNS if any(c[1] in r for r in rows)]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for _, key, fmt, *scale in cols:
            value = r.get(key)
            if value is not None and scale:
                value = value * scale[0]
            cells.append("" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    device = f"{jax.devices()[0].device_kind} x{jax.device_count()}, {os.cpu_count()} CPUs"
    return "\n".join(lines) + f"\n\n{device}; jax {jax.__version__}\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="all", help=f"all or one of: {', '.join(CONFIGS)}")
    p.add_argument("--batch", type=int, help="batch size (default: the config's)")
    p.add_argument("--steps_per_call", type=int, help="default: the config's")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype")
    p.add_argument("--data_shape", help="random data of this shape, e.g. 64,64,3 (images)")
    p.add_argument("--torch", action="store_true", help="time the PyTorch eager reference too")
    p.add_argument("--calls", type=int, default=20, help="timed calls (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls after compiling")
    p.add_argument("--quick", action="store_true", help="3 calls, 1 warm-up, small peak matmul")
    p.add_argument("--json", help="write the rows here (a list of objects)")
    p.add_argument("--markdown", help="write the table here")
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.warmup = 3, 1
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    names = CONFIGS if args.config == "all" else args.config.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"unknown config {unknown}; valid: all, {', '.join(CONFIGS)}")
    shape = tuple(int(d) for d in args.data_shape.split(",")) if args.data_shape else None
    rows = []
    for name in names:
        rows.append(measure(name, args, shape))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table)
    return rows


if __name__ == "__main__":
    main()
