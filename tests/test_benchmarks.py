"""benchmarks/throughput.py keeps the JSON contract README's speed tables are made from.

One quick run of the smallest config, train.py's loop included; speed itself is never
asserted, only the keys and that the derived columns follow from the measured ones.
"""

import json
import math

from conftest import run_cli

KEYS = (  # the keys, then bytes, steps_per_call's gain and the loop's
    "config",
    "batch",
    "dtype",
    "steps_per_call",
    "compile_s",
    "step_ms",
    "examples_per_s",
    "flops_per_step",
    "flops_per_s",
    "peak_flops_per_s",
    "mfu",
    "bytes_per_step",
    "one_step_ms",
    "steps_per_call_gain",
    "loop_steps_per_s",
    "loop_fraction",
    "loop_fraction_mean",
)


def test_throughput_json_and_table(tmp_path):
    out = tmp_path / "rows.json"
    table = tmp_path / "table.md"
    r = run_cli(
        "benchmarks/throughput.py",
        "--config=gan_ring8",
        "--quick",
        "--loop",
        f"--json={out}",
        f"--markdown={table}",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(out.read_text())
    assert set(KEYS) <= set(row), set(KEYS) - set(row)
    assert (row["config"], row["batch"], row["dtype"]) == ("gan_ring8", 256, "float32")
    assert row["steps_per_call"] == 50
    for key in KEYS[4:]:  # all but config, batch, dtype and steps_per_call are numbers
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    step_s = row["step_ms"] / 1e3
    assert math.isclose(row["examples_per_s"], row["batch"] / step_s, rel_tol=1e-9)
    assert math.isclose(row["flops_per_s"], row["flops_per_step"] / step_s, rel_tol=1e-9)
    assert math.isclose(row["mfu"], row["flops_per_s"] / row["peak_flops_per_s"], rel_tol=1e-9)
    gain = row["one_step_ms"] / row["step_ms"]
    assert math.isclose(row["steps_per_call_gain"], gain, rel_tol=1e-9)
    # per step (about 0.4 GFLOP), not per 50-step call (about 2e10)
    assert 1e8 < row["flops_per_step"] < 1e10
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| config |") and "GB/step" in lines[0]
    assert lines[2].startswith("| gan_ring8 | 2 | 256 | float32 | 50 |")
    assert "torch" not in lines[0]  # no --torch, no torch columns
