"""Where a config's train step spends its time, op by op, from a jax.profiler trace.

python benchmarks/op_profile.py [--config NAME] [--calls N] [--top K] [--trace_dir DIR]
    [--jax_gradients]

Runs the compiled call that benchmarks/throughput.py times (train.py's own chunk, with the
config's steps_per_call) --calls times under jax.profiler and splits each call's wall time
among the compiled program's ops (XLA's thunks) that run at each moment: an op runs for its
trace event, except convolutions and dots, which XLA:CPU hands to Eigen's thread pool and
which run from their (short) start event to their "end:" event; a stretch of time in which k
ops run counts 1/k to each, so the shares add up to the wall time. Time in which no op runs
(dispatch, waiting) is "(none)". Printed per training step (a call's time over its steps):
ms by kind of op (conv: a convolution; dot; library fusion: ops XLA:CPU hands to a library
such as YNNPACK, with any elementwise ops fused into them; loop fusion: XLA's own fused
elementwise and reduction loops), then the --top ops with their result shape and the jax op
they come from. Only ops of the compiled program count: the trace's other events (Python,
the executor's own) are left out. Caveats: tracing costs time per op, so a step of many
small ops takes longer here than in throughput.py (read the shares); other ops' "end:"
events are the executor's bookkeeping, which can come long after the op ran (so they are not
used); an Eigen op's "end:" event can be late in the same way. --jax_gradients profiles the
step with JAX's own gradients for every conv layer (genjax.models.layers.EXPLICIT_GRADIENTS =
False), the form the written-out CPU gradients replace.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from benchmarks.quality import base_name  # noqa: E402
from benchmarks.throughput import (  # noqa: E402
    CONFIGS,
    data_shape_for,
    load_config,
    machine,
    parse_args,
    ready_call,
)
from genjax.backend import keep_freed_host_memory, unroll_large_threefry_on_cpu  # noqa: E402
from genjax.models import layers  # noqa: E402

CALL = "op_profile_call"  # the trace annotation around each timed call
END = "end: "
CONTAINERS = ("while", "conditional", "call")  # ops that run other ops
ASYNC = ("conv", "dot")  # kinds of op that run on after their start event
# an HLO instruction: %name = shape opcode(operands) ... op_name="..."
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([\w-]+)\((.*)$")
OP_NAME = re.compile(r'op_name="([^"]+)"')


def hlo_ops(hlo_text: str) -> dict:
    """{instruction name: (kind, result shape, jax op name)} of a compiled module's text."""
    ops = {}
    for line in hlo_text.splitlines():
        m = INSTRUCTION.match(line)
        if not m:
            continue
        name, shape, opcode, rest = m.groups()
        if opcode == "convolution":
            kind = "conv"
        elif opcode == "dot":
            kind = "dot"
        elif opcode == "fusion":
            kind = "library fusion" if "kind=kCustom" in rest else "loop fusion"
        else:
            kind = opcode
        op_name = OP_NAME.search(rest)
        ops[name] = (kind, shape.split("{")[0], op_name.group(1) if op_name else "")
    return ops


def op_spans(events: list, ops: dict, start: float, stop: float) -> list:
    """(start, end, name) of every run of an op of `ops` that starts in [start, stop), in
    microseconds. A run ends at its own event's end or, for the ASYNC kinds, at the next
    "end:" event of its name if that is later (an op in a loop body runs once per iteration).
    Ops that hold others (a loop, a branch, a call) are left out: their time is their ops'."""
    inside = sorted((e for e in events if start <= e["ts"] < stop), key=lambda e: e["ts"])
    open_runs = collections.defaultdict(collections.deque)
    spans = []
    for e in inside:
        name = e["name"]
        if name.startswith(END) and open_runs[name[len(END) :]]:
            i = open_runs[name[len(END) :]].popleft()
            spans[i] = (spans[i][0], max(spans[i][1], e["ts"] + e["dur"]), spans[i][2])
        elif name in ops and ops[name][0] not in CONTAINERS:
            if ops[name][0] in ASYNC:
                open_runs[name].append(len(spans))
            spans.append((e["ts"], e["ts"] + e["dur"], name))
    return spans


def split_wall_time(spans: list, start: float, stop: float) -> dict:
    """{op name or '(none)': microseconds}: each stretch between two span edges goes to the
    ops running through it in equal parts. Sums to stop - start."""
    edges = []
    for s, e, name in spans:
        s, e = min(max(s, start), stop), min(max(e, start), stop)
        edges += [(s, 1, name), (e, -1, name)]
    edges.sort(key=lambda edge: (edge[0], -edge[1]))
    share = collections.defaultdict(float)
    running = collections.Counter()
    last = start
    for t, change, name in [*edges, (stop, 0, None)]:
        if t > last:
            names = list(running.elements()) or ["(none)"]
            for n in names:
                share[n] += (t - last) / len(names)
            last = t
        if change:
            running[name] += change
            if not running[name]:
                del running[name]
    return share


def read_trace(trace_dir: str) -> list:
    """The complete ('X') events of the newest trace jax.profiler wrote under `trace_dir`."""
    path = sorted(glob.glob(f"{trace_dir}/plugins/profile/*/*.trace.json.gz"))[-1]
    with gzip.open(path) as f:
        return [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]


def profile(name: str, calls: int, trace_dir: str) -> tuple[dict, dict, int]:
    """({op: ms per step}, hlo ops, steps per call) of `calls` calls of config `name`."""
    config = load_config(name, parse_args([]))
    _, state, call, data, key, _ = ready_call(config, data_shape_for(name, None))
    ops = hlo_ops(call.as_text())
    for _ in range(2):  # warm-up
        state, metrics = call(state, data, key)
        jax.block_until_ready((state, metrics))
    jax.profiler.start_trace(trace_dir)
    for _ in range(calls):
        with jax.profiler.TraceAnnotation(CALL):
            state, metrics = call(state, data, key)
            jax.block_until_ready((state, metrics))
    jax.profiler.stop_trace()
    events = read_trace(trace_dir)
    total = collections.defaultdict(float)
    timed = [e for e in events if e["name"] == CALL]
    for c in timed:
        share = split_wall_time(
            op_spans(events, ops, c["ts"], c["ts"] + c["dur"]), c["ts"], c["ts"] + c["dur"]
        )
        for op, us in share.items():
            total[op] += us / 1e3 / len(timed) / config.steps_per_call
    return dict(total), ops, config.steps_per_call


def markdown(name: str, ms: dict, ops: dict, top: int, k: int) -> str:
    kinds = collections.defaultdict(float)
    for op, t in ms.items():
        kinds[ops[op][0] if op in ops else op] += t
    wall = sum(ms.values())
    lines = [f"{name}: {wall:.3g} ms per step (K = {k} steps per call)", ""]
    lines += ["| kind | ms/step | share |", "|---|---|---|"]
    for kind, t in sorted(kinds.items(), key=lambda x: -x[1]):
        lines.append(f"| {kind} | {t:.3g} | {t / wall:.0%} |")
    lines += ["", "| op | kind | shape | ms/step | from |", "|---|---|---|---|---|"]
    for op, t in sorted(ms.items(), key=lambda x: -x[1])[:top]:
        kind, shape, source = ops.get(op, (op, "", ""))
        source = source.removeprefix("jit(chunk)/").replace("while/body/closed_call/", "")
        lines.append(f"| {op} | {kind} | {shape} | {t:.3g} | {source} |")
    return "\n".join(lines) + f"\n\n{machine()}; jax {jax.__version__}\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="dcgan_mnist", help="a config, or a variant NAME+KEY=V")
    p.add_argument("--calls", type=int, default=10, help="profiled calls (after 2 warm-up)")
    p.add_argument("--top", type=int, default=20, help="ops listed")
    p.add_argument("--trace_dir", default=None, help="keep the trace here (TensorBoard)")
    p.add_argument(
        "--jax_gradients", action="store_true", help="JAX's own conv gradients, not genjax's"
    )
    args = p.parse_args(argv)
    if base_name(args.config) not in CONFIGS:
        p.error(f"--config {args.config}: unknown config; valid: {', '.join(CONFIGS)}")
    if args.jax_gradients:
        layers.EXPLICIT_GRADIENTS = False
    keep_freed_host_memory()  # as train.py does
    unroll_large_threefry_on_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        ms, ops, k = profile(args.config, args.calls, args.trace_dir or tmp)
    print(markdown(args.config, ms, ops, args.top, k))
    return ms


if __name__ == "__main__":
    main()
