"""Data augmentation when labels are scarce: does a conditional model's output help a classifier?

    python benchmarks/augment.py [--seeds 0,1,2] [--per_class 50] [--num 500,5000]
        [--configs cvae_mnist,cdcgan_mnist] [--model_steps N] [--classifier_steps 600]
        [--runs runs/augment] [--out docs/augment.md]

For each seed: PER_CLASS labelled digits of each class are drawn from mnist5k's training split
(numpy seed S) and written as RUNS/seedS/real.npz, with mnist5k's test split as its test
images. Each class-conditional model CONFIG trains on that file alone (seed S, into
RUNS/seedS/CONFIG; resumed if there); sample.py's dataset mode then writes NUM synthetic
digits of uniformly drawn classes (RUNS/seedS/CONFIG_NUM.npz). genjax's feature classifier
(genjax.metrics.classifier.train: the same network, steps and shifts in every arm) is trained
on the real digits alone and on `mix:npz:real.npz+npz:CONFIG_NUM.npz`, each with seed S,
and scored on the 500 test digits. The table has each arm's test accuracy per seed and the
gain over the real digits alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scarce_labels(seed: int, per_class: int, out: Path) -> Path:
    """`per_class` training digits of each class from mnist5k (numpy seed `seed`) as an npz:
    file, with mnist5k's whole test split as its test_images/test_labels."""
    from genjax.data.embedded import mnist5k_splits

    splits = mnist5k_splits()
    train, test = splits.select("train").to_arrays(), splits.select("test").to_arrays()
    rng = np.random.default_rng(seed)
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(train["label"] == c), per_class, replace=False)
            for c in range(splits.num_classes)
        ]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        images=train["image"][chosen],
        labels=train["label"][chosen],
        test_images=test["image"],
        test_labels=test["label"],
    )
    return out


def train_model(config_name: str, real: Path, seed: int, workdir: Path, steps: int):
    """The conditional model trained on the scarce digits (resumed if `workdir` has it)."""
    from genjax.train import Trainer

    config = importlib.import_module(f"configs.{config_name}").get_config()
    config.data.train = f"npz:{real}"
    config.seed = seed
    config.sample_every = 0
    if steps:
        config.num_steps = steps
    trainer = Trainer(config, workdir)
    if not trainer.experiment.num_classes:
        sys.exit(f"--config {config_name} is not class-conditional; e.g. cvae_mnist, cdcgan_mnist")
    if int(trainer.run().step) < config.num_steps:  # stopped early (SIGTERM saves, returns)
        sys.exit(f"{workdir} stopped before step {config.num_steps}; rerun to resume")


def accuracy(spec: str, steps: int, seed: int) -> float:
    """Test accuracy of the feature classifier trained on the training split of `spec`."""
    from genjax.data.sources import open_source
    from genjax.metrics import classifier

    data = open_source(spec)
    train_source = data.select("train")
    train, test = train_source.to_arrays(), data.select("test").to_arrays()
    module, params = classifier.train(
        train["image"], train["label"], train_source.num_classes, steps=steps, seed=seed
    )
    _, predicted = classifier.outputs(
        classifier.TrainedClassifier(module, params, {}), test["image"]
    )
    return float(np.mean(predicted == test["label"]))


def run_seed(args, seed: int) -> dict:
    from genjax.sampling import write_samples

    folder = ROOT / args.runs / f"seed{seed}"
    real = scarce_labels(seed, args.per_class, folder / "real.npz")
    row = {"real": accuracy(f"npz:{real}", args.classifier_steps, seed)}
    for config in args.configs:
        workdir = folder / config
        train_model(config, real, seed, workdir, args.model_steps)
        for num in args.num:
            synthetic = folder / f"{config}_{num}.npz"
            write_samples(workdir, synthetic, num=num, seed=seed, mode="dataset")
            spec = f"mix:npz:{real}+npz:{synthetic}"
            row[f"{config}+{num}"] = accuracy(spec, args.classifier_steps, seed)
    print(json.dumps({"seed": seed} | row), flush=True)
    return row


def table(args, rows: list[dict]) -> str:
    """The markdown table: one row per training set, one column per seed."""
    command = " ".join(["python benchmarks/augment.py", *sys.argv[1:]])
    lines = [
        f"`{command}`",
        "",
        f"{args.per_class} labelled digits per class; each model trained on them alone; the "
        f"classifier {args.classifier_steps} steps; test accuracy on mnist5k's 500 test digits.",
        "",
        "| training data | "
        + " | ".join(f"seed {s}" for s in args.seeds)
        + " | mean ± std | gain over real |",
        "|---|" + "---|" * (len(args.seeds) + 2),
    ]
    real = np.array([r["real"] for r in rows])
    for arm in rows[0]:
        values = np.array([r[arm] for r in rows])
        config, _, num = arm.partition("+")
        name = "real digits alone" if arm == "real" else f"real + {num} from {config}"
        gain = "" if arm == "real" else f"{np.mean(values - real):+.4f}"
        cells = " | ".join(f"{v:.4f}" for v in values)
        lines.append(f"| {name} | {cells} | {values.mean():.4f} ± {values.std():.2g} | {gain} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per_class", type=int, default=50)
    parser.add_argument("--num", default="500,5000", help="synthetic set sizes, comma-separated")
    parser.add_argument("--configs", default="cvae_mnist,cdcgan_mnist", help="comma-separated")
    parser.add_argument("--model_steps", type=int, default=0, help="0 = the config's")
    parser.add_argument("--classifier_steps", type=int, default=600)
    parser.add_argument("--runs", default="runs/augment")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.num = [int(n) for n in args.num.split(",")]
    args.configs = args.configs.split(",")
    from genjax.backend import unroll_large_threefry_on_cpu

    unroll_large_threefry_on_cpu()  # as train.py does
    rows = [run_seed(args, seed) for seed in args.seeds]
    text = table(args, rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
