"""Training throughput of the compiled call train.py runs: ms/step, examples/s, FLOPs and MFU.

python benchmarks/throughput.py --config all [--batch B] [--steps_per_call K] [--dtype D]
    [--data_shape 64,64,3] [--torch [--torch_threads N]] [--loop [--loop_runs N]] [--host_data]
    [--json FILE] [--markdown FILE] [--quick]

Per config (configs/NAME.py) the call timed is genjax.train.Trainer's own compiled chunk (guarded
step, make_chunk with the config's data path, DataParallel.compile), on the config's embedded data
set or on random data of --data_shape. A config whose data needs a download (RANDOM_DATA_SHAPES:
sngan_cifar10, dcgan_celeba64) runs on random data of its data's shape unless --data_shape gives
another; random data is labelled (RANDOM_CLASSES classes) for a class-conditional model, and is
opened by the Trainer as a named data set (on_random_data). `--config all` is the configs whose
data ships with genjax (not the two-stage VQ-VAE ones); name sngan_cifar10 or dcgan_celeba64 to
time them (`--config all,sngan_cifar10+steps_per_call=1`: a config may carry overrides as
benchmarks/quality.py's variants do; on a GPU: benchmarks/gpu.sh). Steady-state time is the median
of --calls timed calls after --warmup, each ending in block_until_ready; with --torch the PyTorch
eager reference (benchmarks/torch_reference.py) is timed in alternation with it, as is the peak (a
large matmul in the same dtype), so ratios hold under a changing machine load. Each timed call
follows an untimed call of the same kind (`settled`), so that it runs back to back with its own
kind as in a training loop, not in the wake of another's. FLOPs per step: XLA's generic cost
analysis of the 1-step call's lowered (unoptimised) module with every lax.scan unrolled, so that
the n_critic updates all count (XLA counts a loop body once, compiled or not), run by the CPU
client on every backend: after optimisation, GPU matmuls and convolutions are cuBLAS/cuDNN custom
calls that the analysis counts as nothing. On CPU it agrees closely with the compiled call's count
in float32 and is a little below it in bfloat16 (the compiled count adds the bfloat16 <-> float32
converts XLA:CPU inserts). Bytes accessed per step: the compiled 1-step call's count on CPU (the
operands and results of every op after fusion, i.e. the memory traffic if no cache kept anything
between ops; FLOPs / bytes is the step's arithmetic intensity); None (n/a) on other backends, where
custom calls are left out, and for a step with a loop. FLOPs, bytes, FLOP/s and the peak are for
all N devices (the per-device program's count times N; the peak matmul, timed on one device, times
N), as examples/s is. `matmul_precision` says how float32 matmuls and convolutions ran: 'ieee' on
CPU, 'tf32' on GPUs that have it (JAX's default precision; the torch reference is set to match).
With --torch, `torch_flops_per_step` is torch's own count of its step (torch.utils.flop_counter:
convolutions and matmuls, forward and backward, nothing elementwise: the work of these layers
computed directly) and `torch_mfu` its rate over the same peak, so 1.5x PyTorch at the same work
needs an MFU of 1.5 x torch_mfu x (flops_per_step / torch_flops_per_step) or more. `processor` is
the host CPU's model name (also under the table). Examples per step = batch_size (the generator's
batch for GANs, whatever n_critic is). With steps_per_call K > 1 the same step compiled one per
call is timed in alternation too: `one_step_ms`, and `steps_per_call_gain` = one_step_ms / step_ms,
what K steps per call save in dispatch and host round trips.

--loop also runs train.py's whole loop (Trainer.run, the config's own log, sample and checkpoint
intervals) in a temporary workdir for checkpoint_every + 2 * log_every steps, --loop_runs times,
each run followed by --calls more timed calls, and reports its steady-state rate: the median of
metrics.jsonl's steps_per_sec after the first log interval (which holds compilation), as
`loop_steps_per_s`, and that over the timed call's rate as `loop_fraction` (the call's time for
a run is the median over the timed calls just before it and just after it; both are medians over
the runs, and `loop_fractions` lists each run's); `loop_fraction_mean` uses all the steps after
the first interval instead of the median, so sample and checkpoint stalls count in full. With
--quick the loop logs every 4 calls and samples and checkpoints every 8 instead (a check that it
runs, not a measurement). The configs on random data (RANDOM_DATA_SHAPES) have no loop run:
train.py runs them on their TFDS data, which random data stands in for only in the timed call.
--host_data sets data.on_device=False: batches come from the grain pipeline on the host
(the timed call reuses one such batch; the loop reads them as train.py does).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.extend import core as jax_core  # noqa: E402

from benchmarks.quality import base_name, config_names, variant_config  # noqa: E402
from benchmarks.readme_tables import config_names as config_files  # noqa: E402
from genjax.backend import keep_freed_host_memory, unroll_large_threefry_on_cpu  # noqa: E402
from genjax.config import DTYPES, resolve  # noqa: E402
from genjax.data.arrays import ArraySplits  # noqa: E402
from genjax.data.kinds import LABEL  # noqa: E402
from genjax.data.sources import NAMED_SOURCES, register_source  # noqa: E402
from genjax.models.registry import entry  # noqa: E402
from genjax.train import Trainer  # noqa: E402

CONFIGS = config_files()


def _embedded(name: str) -> bool:
    """Whether config NAME trains on data that ships with genjax (no download)."""
    return importlib.import_module(f"configs.{name}").get_config().data.train in NAMED_SOURCES


# The example shape of the configs whose data needs a download (TFDS): they run on random
# data of that shape, unless --data_shape gives another
RANDOM_DATA_SHAPES = {"sngan_cifar10": (32, 32, 3), "dcgan_celeba64": (64, 64, 3)}
# `--config all`: the configs whose data ships with genjax, not the VQ-VAE configs (no
# PyTorch reference, and the prior trains on a trained first stage). The GPU configs
# (RANDOM_DATA_SHAPES) run when named: on a 2-core CPU one sngan_cifar10 step at batch 64 takes
# many minutes, a dcgan_celeba64 step seconds.
TWO_STAGE = ("vqvae_mnist", "vqvae_prior_mnist")
ALL = sorted(n for n in CONFIGS if _embedded(n) and n not in TWO_STAGE)
RANDOM_EXAMPLES = 2048  # size of a random data set
RANDOM_CLASSES = 10  # classes of a random data set's labels, for a class-conditional model


def load_config(name: str, args):
    """The config of NAME (configs/NAME.py, or a variant NAME+KEY=VALUE[+...] as in
    benchmarks/quality.py) with the command line's overrides, validated."""
    config = variant_config(name)
    for key in ("batch_size", "steps_per_call", "dtype"):
        value = getattr(args, "batch" if key == "batch_size" else key)
        if value is not None:
            config[key] = value
    if args.host_data:
        config.data.on_device = False
    return resolve(config)


def data_shape_for(name: str, data_shape: tuple | None) -> tuple | None:
    """The random data's shape for config NAME: `data_shape` (--data_shape) if given, else
    RANDOM_DATA_SHAPES' for a config whose data needs a download, else None (its own data)."""
    return data_shape or RANDOM_DATA_SHAPES.get(base_name(name))


def random_splits(name: str, data_shape: tuple, num_classes: int) -> ArraySplits:
    """The data set `name`: RANDOM_EXAMPLES uniform uint8 images (H, W, C), or N(0, 1) points
    (D,), with uniform labels of `num_classes` classes if > 0; its test split is the same."""
    rng = np.random.default_rng(0)
    if len(data_shape) == 1:
        kind, x = "point", rng.normal(size=(RANDOM_EXAMPLES, *data_shape)).astype(np.float32)
    else:
        kind, x = "image", rng.integers(0, 256, (RANDOM_EXAMPLES, *data_shape), dtype=np.uint8)
    arrays = {kind: x}
    if num_classes:
        arrays[LABEL] = rng.integers(0, num_classes, RANDOM_EXAMPLES).astype(np.int32)
    return ArraySplits(name, kind, arrays, arrays, num_classes or None)


def on_random_data(config, data_shape: tuple):
    """`config` training on random data of `data_shape` (labelled, RANDOM_CLASSES classes, if
    its model is class-conditional): a data set registered under a bare name, as the embedded
    ones are, so that train.py's Trainer opens it and builds the experiment on its kind, shape
    and classes as on any other data, and never opens (or downloads) the config's own."""
    classes = RANDOM_CLASSES if entry(config.model.name).conditional else 0
    name = "random_" + "x".join(map(str, data_shape)) + (f"_{classes}classes" if classes else "")
    if name not in NAMED_SOURCES:
        register_source(name, lambda image_size: random_splits(name, data_shape, classes))
    config = config.copy_and_resolve_references()
    config.data.train, config.data.test = name, ""
    config.data.image_size = config.data.center_crop = 0  # served as drawn
    return resolve(config)


def trainer_for(config, data_shape: tuple | None, workdir: Path | None = None) -> Trainer:
    """train.py's Trainer for `config`; with `data_shape`, on random data of that shape."""
    if data_shape is not None:
        config = on_random_data(config, data_shape)
    return Trainer(config, workdir or Path(tempfile.gettempdir()) / "genjax-throughput-unused")


def compiled_chunk(trainer: Trainer, length: int, state):
    """(compiled call of `length` steps, its data, train key, compile seconds).

    The Trainer's own chunk (guarded step, make_chunk, DataParallel.compile), data path and
    train key. The first call's data is reused by every call (as on-device data sets are).
    """
    data = trainer._data_for(length)
    key = jax.random.fold_in(trainer.key, 0)  # Trainer.run's train_key
    start = time.perf_counter()
    compiled = trainer.chunk(length).lower(state, data, key).compile()
    return compiled, data, key, time.perf_counter() - start


def ready_call(config, data_shape: tuple | None):
    """(trainer, its initial state replicated, compiled call of config.steps_per_call steps,
    the call's data, train key, compile seconds): what every benchmark here times."""
    trainer = trainer_for(config, data_shape)
    state = trainer.parallel.replicate(trainer.initial_state())
    return trainer, state, *compiled_chunk(trainer, config.steps_per_call, state)


def positive(value) -> float | None:
    """`value` if it is a positive finite number, else None (a count XLA could not make)."""
    return float(value) if value is not None and 0 < float(value) < math.inf else None


def _first(analysis) -> dict:
    return (analysis[0] if isinstance(analysis, list | tuple) else analysis) or {}


def compiled_bytes(compiled) -> float | None:
    """Bytes accessed by a compiled call, from XLA's cost analysis (after fusion)."""
    return positive(_first(compiled.cost_analysis()).get("bytes accessed"))


def unroll_scans(jaxpr):
    """(`jaxpr` with every lax.scan of length > 1 fully unrolled, how many there were)."""
    count = 0

    def sub(value):
        if type(value) is tuple:  # cond's branches (not a NamedTuple of dimension numbers)
            return tuple(sub(v) for v in value)
        if isinstance(value, jax_core.ClosedJaxpr):
            return value.replace(jaxpr=sub(value.jaxpr))
        if not isinstance(value, jax_core.Jaxpr):
            return value
        eqns = []
        for eqn in value.eqns:
            params = {name: sub(v) for name, v in eqn.params.items()}
            if eqn.primitive.name == "scan" and params["length"] > 1:
                nonlocal count
                count += 1
                params["unroll"] = params["length"]  # no while loop: straight-line code
            eqns.append(eqn.replace(params=params))
        return value.replace(eqns=eqns)

    return sub(jaxpr), count


def step_flops(fn, *args) -> tuple[float | None, int]:
    """(FLOPs of one call of the jitted `fn` on `args`, per device; the scans it unrolled).

    XLA's generic cost analysis of the lowered module, every scan unrolled (a loop body
    otherwise counts once), run by the CPU client: Lowered.cost_analysis() runs the same
    analysis but gives None on PJRT plugin backends (CUDA), and the compiled call's count
    leaves out cuBLAS/cuDNN custom calls. None if the analysis gives no positive count.
    """
    closed, loops = unroll_scans(jax.make_jaxpr(fn)(*args))
    lowered = jax.jit(jax_core.jaxpr_as_fun(closed)).lower(*jax.tree.leaves(args))
    try:
        from jax._src.lib import _jax  # the analysis behind Lowered.cost_analysis()

        module = lowered.compiler_ir("hlo").as_hlo_module()
        analysis = _jax.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
    except (ImportError, AttributeError, RuntimeError):  # another jax, or no CPU client
        analysis = lowered.cost_analysis()
    return positive(_first(analysis).get("flops")), loops


def matmul_precision() -> str:
    """How float32 matmuls and convolutions run on the default device under JAX's precision
    setting (lax.Precision): 'ieee' float32, 'tf32' (GPU default), or the setting's name."""
    setting = jax.config.jax_default_matmul_precision or "default"
    device = jax.devices()[0]
    if device.platform == "cpu" or setting in ("highest", "float32", "F32_F32_F32"):
        return "ieee"
    if jax.default_backend() == "gpu" and setting in ("default", "fastest", "high"):
        # TF32 from Ampere (compute capability 8.0) on; older GPUs run float32
        capability = float(getattr(device, "compute_capability", "8.0"))
        return "tf32" if capability >= 8 else "ieee"
    if jax.default_backend() == "tpu" and setting in ("default", "fastest"):
        return "bf16"  # one bfloat16 pass
    return setting


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def settled(fn) -> tuple[float, float]:
    """Seconds of two calls of `fn` back to back, (first, second): the second is what counts.

    The first follows another kind of call (another library's, or the peak's 48 MiB matmul),
    whose threads may still be spinning and whose data has left this one's out of the caches;
    the second runs as a training loop's calls do, after its own kind. How much slower the
    first was is in the JSON (`unsettled_slowdown`, `torch_unsettled_slowdown`)."""
    return timed(fn), timed(fn)


def peak_matmul(dtype: str):
    """(call, its FLOPs): a large n x n matmul in `dtype` on the default device, waited for.

    The same size under --quick: a smaller matmul runs further below the device's peak than
    the models' own ops do, which would put MFU above 100%."""
    n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    matmul = jax.jit(lambda a: a @ a)
    return lambda: matmul(a).block_until_ready(), 2 * n**3


@functools.cache  # read once per process, not per row and table written
def processor_name() -> str:
    """The host CPU's model name (Linux's /proc/cpuinfo, else platform.processor()), or ''."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine() -> str:
    """The devices and the host a run measures on, for the line under a table."""
    devices = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
    return f"{devices}, host {os.cpu_count()} CPUs ({processor_name() or 'model unknown'})"


def torch_refusal() -> str | None:
    """Why --torch cannot give a fair comparison here (one line), or None if it can."""
    if jax.device_count() > 1:
        return (
            f"--torch times PyTorch on one device but genjax would use all "
            f"{jax.device_count()}; run on one, e.g. CUDA_VISIBLE_DEVICES=0"
        )
    if matmul_precision() not in ("ieee", "tf32"):
        return f"--torch: the torch reference cannot match matmul precision {matmul_precision()}"
    return None


def torch_reference_call(config, arrays: dict, steps: int, threads: int = 0, num_classes=0):
    """benchmarks/torch_reference.py's call on this backend's device, or None if torch lacks
    the device or the model; its float32 matmuls and convolutions run at JAX's precision
    (matmul_precision()). `num_classes` > 0: a class-conditional model, labels in arrays."""
    from benchmarks import torch_reference

    device = {"cpu": "cpu", "gpu": "cuda"}.get(jax.default_backend())
    if device is None or (device == "cuda" and not torch_reference.torch.cuda.is_available()):
        print(f"no torch reference on {jax.default_backend()}", file=sys.stderr)
        return None
    if config.model.name not in torch_reference.MODELS:
        print(f"no torch reference for model {config.model.name!r}", file=sys.stderr)
        return None
    tf32 = matmul_precision() == "tf32"
    return torch_reference.make_call(config, arrays, steps, device, threads, tf32, num_classes)


def loop_rate(config, data_shape: tuple | None, quick: bool) -> tuple[float, float]:
    """train.py's loop run for checkpoint_every + 2 log intervals in a temporary workdir:
    (median steps/s over the log intervals after the first, steps/s over all of them)."""
    config = config.copy_and_resolve_references()
    if quick:
        config.log_every = 4 * config.steps_per_call
        config.sample_every = config.checkpoint_every = 2 * config.log_every
    config.num_steps = min(config.num_steps, config.checkpoint_every + 2 * config.log_every)
    with tempfile.TemporaryDirectory() as workdir:
        trainer_for(config, data_shape, Path(workdir)).run()
        lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    # the intervals after the first
    steps = [b["step"] - a["step"] for a, b in zip(rows[:-1], rows[1:], strict=True)]
    rates = [r["steps_per_sec"] for r in rows[1:]]
    seconds = sum(n / rate for n, rate in zip(steps, rates, strict=True))
    return statistics.median(rates), sum(steps) / seconds


def loop_fractions(args, config, data_shape, call, before: list) -> dict:
    """train.py's loop run --loop_runs times, each between two blocks of --calls timed calls:
    each run's rate over the call's (median of the blocks on either side of it), and the
    medians of those over the runs. A machine whose speed drifts by tens of percent within
    seconds (as a shared 2-core CPU does) scatters single runs set against one block widely;
    the median of several holds steadier."""
    k = config.steps_per_call
    runs = []
    for _ in range(args.loop_runs):
        median_rate, mean_rate = loop_rate(config, data_shape, args.quick)
        call()  # untimed, after the loop; then the timed calls follow their own kind
        after = [timed(call) for _ in range(args.calls)]
        call_s = statistics.median(before + after) / k
        runs.append((median_rate, median_rate * call_s, mean_rate * call_s))
        before = after
    rates, fractions, means = zip(*runs, strict=True)
    return {
        "loop_steps_per_s": statistics.median(rates),
        "loop_fraction": statistics.median(fractions),
        "loop_fraction_mean": statistics.median(means),
        "loop_fractions": list(fractions),
    }


def measure(name: str, args, data_shape: tuple | None) -> dict:
    """One config's row: compile time, steady-state step time, FLOPs, MFU (and torch), on
    the config's data or random data (data_shape_for)."""
    data_shape = data_shape_for(name, data_shape)
    config = load_config(name, args)
    trainer, state, call, data, key, compile_s = ready_call(config, data_shape)
    k = config.steps_per_call
    one_step, one_step_data = (call, data) if k == 1 else compiled_chunk(trainer, 1, state)[:2]
    # Per step: the 1-step call's counts, per device, times the devices (examples/s is global)
    devices = trainer.parallel.num_devices
    flops, loops = step_flops(trainer.chunk(1), state, one_step_data, key)
    flops = flops and flops * devices
    # after fusion; custom calls (cuBLAS, cuDNN) are left out on GPU, and a loop counts once
    bytes_accessed = compiled_bytes(one_step) if jax.default_backend() == "cpu" else None
    bytes_accessed = bytes_accessed and (None if loops else bytes_accessed * devices)
    box = {"state": state}

    def runner(compiled, data):
        def run():
            box["state"], metrics = compiled(box["state"], data, key)
            jax.block_until_ready((box["state"], metrics))

        return run

    arrays = trainer.train_source.to_arrays()
    num_classes = trainer.experiment.num_classes  # > 0: a conditional model reads the labels
    keys = (*trainer.experiment.kind.keys, *((LABEL,) if num_classes else ()))
    arrays = {k: arrays[k] for k in keys}
    matmul, matmul_flops = peak_matmul(config.dtype)
    calls = {"genjax": runner(call, data), "peak": matmul}
    if k > 1:  # the same steps one per call, to show what steps_per_call gains
        calls["one_step"] = runner(one_step, one_step_data)
    if args.torch:
        calls["torch"] = torch_reference_call(config, arrays, k, args.torch_threads, num_classes)
    calls = {label: fn for label, fn in calls.items() if fn is not None}
    for _ in range(args.warmup):
        for fn in calls.values():
            fn()
    seconds = {label: [] for label in calls}
    unsettled = {label: [] for label in calls}
    for _ in range(args.calls):  # in turn, so that load changes hit all of them alike
        for label, fn in calls.items():
            first, second = settled(fn)
            unsettled[label].append(first)
            seconds[label].append(second)
    step_s = statistics.median(seconds["genjax"]) / k
    peak = positive(devices * matmul_flops / statistics.median(seconds["peak"]))  # all devices
    flops_per_s = flops and flops / step_s
    row = {
        "config": name,
        "batch": config.batch_size,
        "dtype": config.dtype,
        "steps_per_call": k,
        "data_shape": "x".join(map(str, next(iter(arrays.values())).shape[1:])),
        "devices": devices,
        "matmul_precision": matmul_precision(),
        "processor": processor_name(),
        "compile_s": compile_s,
        "step_ms": 1e3 * step_s,
        "examples_per_s": config.batch_size / step_s,
        "flops_per_step": flops,
        "bytes_per_step": bytes_accessed,
        "flops_per_s": flops_per_s,
        "peak_flops_per_s": peak,
        "mfu": flops_per_s / peak if flops_per_s and peak else None,
        "spread": (max(seconds["genjax"]) - min(seconds["genjax"])) / k / step_s,
        "unsettled_slowdown": statistics.median(unsettled["genjax"]) / k / step_s,
    }
    if "one_step" in seconds:
        row["one_step_ms"] = 1e3 * statistics.median(seconds["one_step"])
        row["steps_per_call_gain"] = row["one_step_ms"] / row["step_ms"]
    if "torch" in seconds:
        from benchmarks.torch_reference import count_flops

        torch_step_s = statistics.median(seconds["torch"]) / k
        row["torch_threads"] = sys.modules["torch"].get_num_threads()
        row["torch_examples_per_s"] = config.batch_size / torch_step_s
        row["speedup_vs_torch"] = torch_step_s / step_s
        row["torch_unsettled_slowdown"] = statistics.median(unsettled["torch"]) / k / torch_step_s
        # torch's count (convs and matmuls only) of one more call, made after the timing
        row["torch_flops_per_step"] = count_flops(calls["torch"]) / k
        row["torch_mfu"] = row["torch_flops_per_step"] / torch_step_s / peak if peak else None
    if args.loop and base_name(name) not in RANDOM_DATA_SHAPES:
        row.update(loop_fractions(args, config, data_shape, calls["genjax"], seconds["genjax"]))
    return row


COLUMNS = [  # (header, key, format)
    ("config", "config", "{}"),
    ("data", "data_shape", "{}"),
    ("batch", "batch", "{}"),
    ("dtype", "dtype", "{}"),
    ("K", "steps_per_call", "{}"),
    ("compile s", "compile_s", "{:.1f}"),
    ("ms/step", "step_ms", "{:.3g}"),
    ("ms/step at K=1", "one_step_ms", "{:.3g}"),
    ("examples/s", "examples_per_s", "{:,.0f}"),
    ("GFLOP/step", "flops_per_step", "{:.3g}", 1e-9),
    ("GB/step", "bytes_per_step", "{:.3g}", 1e-9),
    ("GFLOP/s", "flops_per_s", "{:.3g}", 1e-9),
    ("MFU", "mfu", "{:.1%}"),
    ("torch ex/s", "torch_examples_per_s", "{:,.0f}"),
    ("torch MFU", "torch_mfu", "{:.1%}"),
    ("vs torch", "speedup_vs_torch", "{:.2f}x"),
    ("train.py steps/s", "loop_steps_per_s", "{:,.0f}"),
    ("train.py / call", "loop_fraction", "{:.0%}"),
    ("(mean)", "loop_fraction_mean", "{:.0%}"),
]


PRECISIONS = {
    "ieee": "IEEE float32",
    "tf32": "TF32 (JAX's default precision on GPU; the torch reference set to match)",
    "bf16": "bfloat16 (JAX's default precision on TPU)",
}


def markdown(rows: list[dict], load: tuple[float, float]) -> str:
    """The rows as a markdown table (torch columns only when measured), machine and load.

    A measured column's cell is n/a where the row has None (a count XLA could not make here).
    """
    cols = [c for c in COLUMNS if any(c[1] in r for r in rows)]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for _, key, fmt, *scale in cols:
            value = r.get(key)
            if value is not None and scale:
                value = value * scale[0]
            cells.append(("n/a" if key in r else "") if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    device = machine()
    note = f"1-min load average {load[0]:.1f} at the start, {load[1]:.1f} at the end"
    lines += ["", f"{device}; jax {jax.__version__}; {note}"]
    precisions = sorted({r["matmul_precision"] for r in rows if "matmul_precision" in r})
    if precisions:
        named = ", ".join(PRECISIONS.get(p, p) for p in precisions)
        lines.append(f"float32 matmuls and convolutions: {named}")
    if jax.device_count() > 1:
        lines.append(f"GFLOP/step, GB/step, GFLOP/s and MFU: all {jax.device_count()} devices")
    if any(r.get("bytes_per_step", 0) is None for r in rows):
        lines.append(
            "GB/step n/a: XLA's byte count is trusted on CPU only, for steps without loops"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        default="all",
        help=f"comma-separated: all (the configs whose data ships with genjax: {', '.join(ALL)}) "
        f"and any of: {', '.join(CONFIGS)}",
    )
    p.add_argument("--batch", type=int, help="batch size (default: the config's)")
    p.add_argument("--steps_per_call", type=int, help="default: the config's")
    p.add_argument("--dtype", choices=DTYPES, help="compute dtype")
    p.add_argument("--data_shape", help="random data of this shape, e.g. 64,64,3 (images)")
    p.add_argument("--torch", action="store_true", help="time the PyTorch eager reference too")
    p.add_argument("--torch_threads", type=int, default=0, help="0 = this machine's cores")
    p.add_argument("--loop", action="store_true", help="also time train.py's loop (see above)")
    p.add_argument("--loop_runs", type=int, help="train.py loops to run (default 3, 1 if --quick)")
    p.add_argument("--host_data", action="store_true", help="data.on_device=False (grain)")
    p.add_argument("--calls", type=int, default=20, help="timed calls (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls after compiling")
    p.add_argument("--quick", action="store_true", help="3 calls, 1 warm-up, 1 short loop")
    p.add_argument("--json", help="write the rows here (a list of objects)")
    p.add_argument("--markdown", help="write the table here")
    args = p.parse_args(argv)
    if args.quick:
        args.calls, args.warmup = 3, 1
    if args.loop_runs is None:
        args.loop_runs = 1 if args.quick else 3
    if args.loop_runs < 1:
        p.error(f"--loop_runs={args.loop_runs}; valid: 1 or more")
    return args


def write(path: str, text: str) -> None:
    """`text` into `path` whole or not at all (a run killed while writing leaves the last)."""
    temporary = Path(f"{path}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    parts = config_names(args.config, words=("all",))
    names = [n for part in parts for n in (ALL if part == "all" else [part])]
    unknown = [n for n in names if base_name(n) not in CONFIGS]
    if unknown:
        sys.exit(f"unknown config {unknown}; valid: all, {', '.join(CONFIGS)}")
    refusal = args.torch and torch_refusal()
    if refusal:
        print(refusal, file=sys.stderr)
        sys.exit(2)
    shape = tuple(int(d) for d in args.data_shape.split(",")) if args.data_shape else None
    keep_freed_host_memory()  # as train.py does, for genjax and the torch reference alike
    unroll_large_threefry_on_cpu()  # as train.py does
    rows, load = [], os.getloadavg()[0]
    for name in names:
        rows.append(measure(name, args, shape))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        # after every row, so that a run cut short (a timeout) keeps the rows it measured
        table = markdown(rows, (load, os.getloadavg()[0]))
        if args.json:
            write(args.json, json.dumps(rows, indent=1) + "\n")
        if args.markdown:
            write(args.markdown, table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
