"""Parameter counts of each config's networks and the size of train.py's compiled call.

    python benchmarks/model_stats.py [--config all|NAME[,NAME...]] [--data_shape 32,32,3]
        [--ops]

prints one markdown row per config: its model, the parameters of each of its networks (from
the traced init, nothing run), and with --ops the number of HLO instructions of the compiled
call train.py runs (`steps_per_call` steps, as benchmarks/throughput.py compiles it) and a
digest of their counts by opcode. Two checkouts that print the same digest compile the same
program up to instruction names and the operand order of commutative ops: how a refactor is
shown to leave the training step as it was (--ops_only runs on older checkouts too, where the
parameter counts' APIs differ). --ops needs the config's data (the `all`
configs ship theirs); --data_shape gives the example shape of a config whose data is not at
hand (e.g. 32,32,3 for sngan_cifar10), for the parameter counts.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from benchmarks import throughput  # noqa: E402
from genjax.backend import unroll_large_threefry_on_cpu  # noqa: E402


def parameter_counts(config, data_shape: tuple | None) -> tuple[str, list[int]]:
    """(model name, parameters of each network, in the family's order)."""
    from genjax import experiment
    from genjax.config import resolve
    from genjax.data import resolve_sources
    from genjax.data.kinds import kind_of

    config = resolve(config)
    if data_shape is None:
        source, _ = resolve_sources(config.data)
        kind, data_shape = kind_of(source), source.shape
    else:
        kind = "point" if len(data_shape) == 1 else "image"
    exp = experiment.build(config, kind, data_shape)
    state = jax.eval_shape(exp.init_state, jax.random.PRNGKey(0))
    networks = exp.family.network_params(state)
    return config.model.name, [
        sum(math.prod(x.shape) for x in jax.tree.leaves(p)) for p in networks
    ]


def compiled_ops(name: str) -> tuple[int, str]:
    """(HLO instructions of train.py's compiled call for config NAME, digest of their counts
    by opcode)."""
    config = throughput.load_config(name, throughput.parse_args(["--config", name]))
    _, _, compiled, *_ = throughput.ready_call(config, None)
    counts = collections.Counter(re.findall(r"= \S+ ([a-z][a-z0-9\-]*)\(", compiled.as_text()))
    text = ",".join(f"{op}:{n}" for op, n in sorted(counts.items()))
    return sum(counts.values()), hashlib.sha1(text.encode()).hexdigest()[:12]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    embedded = getattr(throughput, "ALL", throughput.CONFIGS)  # older checkouts: every config
    p.add_argument("--config", default="all", help=f"all ({', '.join(embedded)}) or names")
    p.add_argument("--data_shape", help="example shape, e.g. 32,32,3 (default: the data's)")
    p.add_argument("--ops", action="store_true", help="also compile train.py's call")
    p.add_argument(
        "--ops_only", action="store_true", help="only the compiled call (any genjax checkout)"
    )
    args = p.parse_args(argv)
    args.ops |= args.ops_only
    names = embedded if args.config == "all" else args.config.split(",")
    if unknown := [n for n in names if n not in throughput.CONFIGS]:
        p.error(f"unknown config(s) {', '.join(unknown)}; valid: {', '.join(throughput.CONFIGS)}")
    shape = tuple(int(d) for d in args.data_shape.split(",")) if args.data_shape else None
    unroll_large_threefry_on_cpu()  # as train.py does: the compiled call is train.py's
    header = "| config | model | parameters per network |" + (" HLO ops | digest |" * args.ops)
    print(header + "\n|---|---|---|" + "---|---|" * args.ops)
    rows = []
    for name in names:
        config = throughput.load_config(name, throughput.parse_args(["--config", name]))
        row = {"config": name, "model": config.model.name}
        if not args.ops_only:
            row["model"], row["parameters"] = parameter_counts(config, shape)
        counts = row.get("parameters", [])
        cells = [name, row["model"], " / ".join(f"{c:,}" for c in counts)]
        if args.ops:
            row["ops"], row["digest"] = compiled_ops(name)
            cells += [f"{row['ops']:,}", row["digest"]]
        print("| " + " | ".join(cells) + " |", flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
