"""README's summary tables, printed from the files the benchmarks write into docs/.

    python benchmarks/readme_tables.py [--tables configs,quality,speed] [--docs DIR]

- configs: every configs/NAME.py with its model, data and default run (read from the config),
  its training wall time (docs/train_times.md, written by benchmarks/pictures.sh, and the
  quality runs' mean `train_seconds`) and its headline metric (the quality tables); '—'
  where a file has no figure for it;
- quality: each config's headline metrics, mean ± std over seeds beside the real-vs-real
  floor, from the docs/quality*.md tables benchmarks/quality.py writes, with the command
  that made each table;
- speed: docs/throughput_cpu.json (benchmarks/throughput.py --torch): genjax's and the
  PyTorch reference's examples/s, their ratio and genjax's MFU, with the machine line under
  docs/throughput_cpu.md and the command that made both.

Nothing is measured here: rerun the benchmarks to change a figure, then this to print the
tables README.md shows (tests/test_readme_tables.py checks that README holds them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TABLES = ("configs", "quality", "speed")

# Quality tables in the order they are read; a config's rows come from the first that has it.
QUALITY_TABLES = ("quality.md", "quality_dcgan.md", "quality_vae_conv.md")
# The first group of metrics a config's table has is its headline.
HEADLINES = (("test_nll",), ("modes", "hq_fraction"), ("class_accuracy",), ("fd_classifier",))
# Configs headlined by other metrics (their variants are not): one made for inpainting, and
# the GAN config whose precision and recall matter beside its FD.
OWN_HEADLINES = {
    "masked_vae_mnist": ("inpaint_mse[bottom]", "inpaint_mse[centre]"),
    "cdcgan_sn_mnist": ("fd_classifier", "precision_classifier", "recall_classifier"),
}
SPEED_JSON, SPEED_MARKDOWN = "throughput_cpu.json", "throughput_cpu.md"
SPEED_COMMAND = (
    "taskset -c 0 python benchmarks/throughput.py "
    "--config all,sngan_cifar10+steps_per_call=1+batch_size=16 --torch --torch_threads 1 "
    "--loop --loop_runs 1 --calls 5 --warmup 1 "
    f"--json docs/{SPEED_JSON} --markdown docs/{SPEED_MARKDOWN}"
)
MODELS = {  # config -> its model in a few words (the config's docstring for any other)
    "cdcgan_mnist": "class-conditional DCGAN: conditional BatchNorm in G, projection D",
    "cdcgan_sn_mnist": "cdcgan_mnist with a spectrally normalised D, hinge loss",
    "dcgan_celeba64": "DCGAN at 64×64×3 on faces (108-pixel centre crop), for a GPU",
    "dcgan_mnist": "DCGAN: BatchNorm + ReLU in G, LeakyReLU 0.2 in D",
    "gan_grid25": "MLP GAN for 2-D data, 3×256, lr decayed over the last half",
    "gan_mlp_mnist": "the 2014 MLP GAN: z(100) → 128 → 784; 784 → 128 → 1",
    "gan_ring8": "MLP GAN for 2-D data, 2×256, lr decayed over the last half",
    "masked_vae_mnist": "MLP VAE given the known pixels and mask, trained on 7 mask kinds",
    "sngan_cifar10": "SNGAN: ResNet G, spectrally normalised ResNet D, hinge loss, for a GPU",
    "vae_conv_mnist": "convolutional VAE, Bernoulli, dynamically binarised",
    "vae_mlp_mnist": "MLP VAE, hidden 512, z 20, Bernoulli, dynamically binarised",
    "vae_pixel_mnist": "MLP VAE (2×512, z 32) + autoregressive 7×7 causal decoder",
}


def markdown_rows(text: str) -> list[dict]:
    """The rows of the first markdown table in `text`, each as {header: cell}."""
    lines = [line.strip() for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return []
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    header, body = table[0], table[2:]  # table[1] is the |---| line
    return [dict(zip(header, cells, strict=True)) for cells in body]


def line_after_table(text: str) -> str:
    """The first non-empty line after the first markdown table in `text` ('' if none)."""
    seen_table = False
    for line in text.splitlines():
        if line.startswith("|"):
            seen_table = True
        elif seen_table and line.strip():
            return line.strip()
    return ""


def machine_line(table_text: str) -> str:
    """The devices, host and jax version under a throughput table, without the load average
    (which describes one run, not the machine)."""
    parts = line_after_table(table_text).split("; ")
    return "; ".join(p for p in parts if not p.startswith("1-min load average"))


def read_quality(docs: Path) -> dict[str, dict]:
    """{config: {'file', 'seeds', 'command', 'metrics': {metric: row}}} from the quality
    tables in `docs` (QUALITY_TABLES first, then any other quality*.md, sorted)."""
    names = list(QUALITY_TABLES)
    names += sorted(p.name for p in docs.glob("quality*.md") if p.name not in names)
    found: dict[str, dict] = {}
    for name in names:
        path = docs / name
        if not path.exists():
            continue
        text = path.read_text()
        first = text.splitlines()[0] if text else ""
        seeds = first.split(";")[0].removeprefix("Seeds ").strip()
        command = first.split("`")[1] if first.count("`") >= 2 else ""
        if command and "--out" not in command:
            command += f" --out docs/{name}"
        tables: dict[str, dict] = {}
        for row in markdown_rows(text):
            tables.setdefault(row["config"], {})[row["metric"]] = row
        for config, metrics in tables.items():
            found.setdefault(
                config, {"file": name, "seeds": seeds, "command": command, "metrics": metrics}
            )
    return found


def headline(metrics: dict, config: str = "") -> list[str]:
    """The headline metrics among `metrics` of `config` (OWN_HEADLINES, else the first group
    of HEADLINES it has), in order."""
    own = [m for m in OWN_HEADLINES.get(config, ()) if m in metrics]
    if own:
        return own
    for group in HEADLINES:
        if any(m in metrics for m in group):
            return [m for m in group if m in metrics]
    return []


def mean_of(cell: str) -> str:
    """'89.71' of a 'mean ± std' cell."""
    return cell.split("±")[0].strip()


def quality_table(quality: dict[str, dict]) -> str:
    """Each config's headline metrics, with the commands that made the tables read."""
    lines = [
        "| config | metric | mean ± std over seeds | real-vs-real floor | seeds | table |",
        "|---|---|---|---|---|---|",
    ]
    for config in sorted(quality):
        entry = quality[config]
        link = f"[{entry['file']}](docs/{entry['file']})"
        for metric in headline(entry["metrics"], config):
            row = entry["metrics"][metric]
            floor = row.get("real-vs-real floor", "")
            mean_std = row["mean ± std over seeds"]
            lines.append(
                f"| {config} | {metric} | {mean_std} | {floor} | {entry['seeds']} | {link} |"
            )
    commands = {e["file"]: e["command"] for e in quality.values() if e["command"]}
    lines += ["", "Made by:", ""]
    lines += [f"- `{commands[name]}`" for name in sorted(commands)]
    return "\n".join(lines) + "\n"


def speed_table(rows: list[dict], machine: str) -> str:
    """genjax's and the PyTorch reference's examples/s per config, with the machine."""
    lines = [
        "| config | genjax examples/s | PyTorch examples/s | genjax / PyTorch | MFU |",
        "|---|---|---|---|---|",
    ]

    def cell(row: dict, key: str, fmt: str) -> str:
        return "" if row.get(key) is None else fmt.format(row[key])

    def rate(row: dict, key: str) -> str:  # whole examples, or 3 figures below 100
        return cell(row, key, "{:,.0f}" if (row.get(key) or 0) >= 100 else "{:.3g}")

    for row in sorted(rows, key=lambda r: r["config"]):
        cells = [
            row["config"],
            rate(row, "examples_per_s"),
            rate(row, "torch_examples_per_s"),
            cell(row, "speedup_vs_torch", "{:.2f}x"),
            cell(row, "mfu", "{:.1%}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Machine: {machine}. Made by `{SPEED_COMMAND}`."]
    return "\n".join(lines) + "\n"


def config_names(root: Path = ROOT) -> list[str]:
    return sorted(p.stem for p in (root / "configs").glob("*.py") if not p.stem.startswith("_"))


def load_config(name: str):
    """configs/NAME.py's config."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"configs.{name}").get_config()


def describe(name: str) -> str:
    """MODELS[name], else the first line of the config module's docstring."""
    if name in MODELS:
        return MODELS[name]
    doc = importlib.import_module(f"configs.{name}").__doc__ or ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""


def configs_table(
    names: list[str],
    load: Callable,
    train_times: list[dict],
    quality: dict[str, dict],
    describe_model: Callable[[str], str] = describe,
) -> str:
    """One row per config: model, data, default run, wall times and headline metric."""
    lines = [
        "| config | model | data | default run | wall s, pictures.sh | train s, quality.py "
        "| headline (mean over seeds) |",
        "|---|---|---|---|---|---|---|",
    ]
    wall = {row["config"]: row["wall time (s)"] for row in train_times}
    for name in names:
        c = load(name)
        run = f"{c.num_steps:,} steps, batch {c.batch_size}"
        entry = quality.get(name, {"metrics": {}})
        seconds = entry["metrics"].get("train_seconds", {}).get("mean ± std over seeds", "")
        seconds = f"{float(mean_of(seconds)):.0f}" if seconds else "—"
        best = ", ".join(
            f"{m} {mean_of(entry['metrics'][m]['mean ± std over seeds'])}"
            for m in headline(entry["metrics"], name)
        )
        best = best or "—"
        cells = [f"`{name}`", describe_model(name), c.data.train, run, wall.get(name, "—")]
        cells += [seconds, best]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tables(which: list[str], docs: Path = DOCS) -> dict[str, str]:
    """{table name: its markdown} for the tables named in `which`."""
    out = {}
    quality = read_quality(docs) if {"configs", "quality"} & set(which) else {}
    if "configs" in which:
        times = docs / "train_times.md"
        rows = markdown_rows(times.read_text()) if times.exists() else []
        out["configs"] = configs_table(config_names(), load_config, rows, quality)
    if "quality" in which:
        out["quality"] = quality_table(quality)
    if "speed" in which:
        rows = json.loads((docs / SPEED_JSON).read_text())
        out["speed"] = speed_table(rows, machine_line((docs / SPEED_MARKDOWN).read_text()))
    return out


def main(argv=None) -> dict[str, str]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", default=",".join(TABLES), help=f"of: {', '.join(TABLES)}")
    p.add_argument("--docs", default=str(DOCS), help="where the benchmarks' tables are")
    args = p.parse_args(argv)
    which = args.tables.split(",")
    if unknown := [t for t in which if t not in TABLES]:
        p.error(f"unknown table(s) {', '.join(unknown)}; valid: {', '.join(TABLES)}")
    out = tables(which, Path(args.docs))
    print("\n".join(out[name] for name in which), end="")
    return out


if __name__ == "__main__":
    main()
