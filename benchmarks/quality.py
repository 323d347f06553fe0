"""The quality table: trains default configs for several seeds and scores them.

    python benchmarks/quality.py [--configs gan_ring8,gan_grid25,...] [--seeds 0,1,2]
        [--num_steps N] [--nll_k K] [--inpaint_masks bottom,centre] [--out docs/quality.md]
        [--runs runs/quality]

Each (config, seed) is trained with train.py's loop into RUNS/CONFIG/seedS (seedS_stepsN with
--num_steps N; resuming if it is there) and evaluated with genjax.metrics.evaluate; the
markdown table holds mean ± std over seeds of the keys that matter for that config, beside
the real-vs-real floor.

A config may carry overrides after `+`, each KEY=VALUE as on train.py's command line, e.g.
`dcgan_mnist+gan.ema_decay=0.999+gan.augment=translation`: a variant, with rows and a run
folder of its own, scored on the keys of its base config. `{seed}` in a value is replaced
by each run's seed, so that a second stage trains on the first stage of its own seed:
`vqvae_prior_mnist+prior.vqvae_workdir=runs/quality/vqvae_mnist/seed{seed}`.

With --inpaint_masks each mask adds `inpaint_mse[MASK]` (of the average of 8 fills),
`inpaint_mse_one_fill[MASK]` and the two baselines (the mean training image, the nearest
training image on the known pixels) to the config's rows; a run
already trained is restored and only the new masks are scored.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONDITIONAL_GAN_KEYS = [
    "class_accuracy",
    "classes_covered",
    "fd_classifier",
    "precision_classifier",
    "recall_classifier",
]
KEYS = {
    "gan_ring8": ["modes", "hq_fraction", "reverse_kl"],
    "gan_grid25": ["modes", "hq_fraction", "reverse_kl"],
    "gan_mlp_mnist": [
        "fd_classifier",
        "precision_classifier",
        "recall_classifier",
        "classes_covered",
    ],
    "dcgan_mnist": [
        "fd_classifier",
        "precision_classifier",
        "recall_classifier",
        "classes_covered",
    ],
    "cdcgan_mnist": CONDITIONAL_GAN_KEYS,
    "cdcgan_sn_mnist": CONDITIONAL_GAN_KEYS,
    "vae_mlp_mnist": ["test_nll", "test_neg_elbo", "fd_classifier"],
    "vae_conv_mnist": ["test_nll", "test_neg_elbo", "fd_classifier"],
    "vae_pixel_mnist": ["test_nll", "test_neg_elbo", "fd_classifier"],
    "masked_vae_mnist": ["test_nll", "test_neg_elbo", "fd_classifier"],
    "text_vae": [
        "test_nll",
        "test_neg_elbo",
        "test_ppl",
        "kl",
        "mutual_info",
        "active_units",
        "distinct_2",
        "self_bleu",
        "novel_fraction",
    ],
    "text_lm": ["test_nll", "test_ppl", "distinct_2", "self_bleu", "novel_fraction"],
    "vqvae_mnist": ["test_recon", "test_neg_elbo", "test_perplexity", "test_usage"],
    # its first stage: +prior.vqvae_workdir=RUNS/vqvae_mnist/seedS (docs/vqvae.md)
    "vqvae_prior_mnist": [
        "test_neg_elbo",
        "test_code_nll",
        "test_recon",
        "test_bits_per_dim",
        "fd_classifier",
    ],
}


INPAINT_KEYS = (
    "inpaint_mse",
    "inpaint_mse_one_fill",
    "inpaint_mse_mean_image",
    "inpaint_mse_nearest",
)


def run_one(
    name: str, seed: int, runs: Path, num_steps: int, nll_k: int, masks: tuple[str, ...] = ()
) -> dict:
    """Trains and evaluates one (config, seed), `{seed}` in the name replaced by the seed; its
    row is kept in the run's quality.json and reused by later calls with the same steps and
    nll_k (so a table can be assembled from runs made at different times without retraining);
    a run scored again with another nll_k keeps the train_seconds of its training."""
    from genjax.metrics.evaluate import evaluate, inpaint_metrics
    from genjax.train import Trainer

    config = variant_config(name.replace("{seed}", str(seed)))
    config.seed = seed
    config.sample_every = 0
    if num_steps:
        config.num_steps = num_steps
    # A run of another length is another run (the lr schedule spans num_steps): its own folder.
    workdir = runs / name / (f"seed{seed}_steps{num_steps}" if num_steps else f"seed{seed}")
    trained = workdir / "config.json"
    trained_steps = json.loads(trained.read_text())["num_steps"] if trained.exists() else None
    if trained_steps not in (None, config.num_steps):
        sys.exit(
            f"{workdir} holds a run of {trained_steps} steps, not {config.num_steps}; "
            "delete it or give another --runs"
        )
    saved = workdir / "quality.json"
    settings = {"num_steps": config.num_steps, "nll_k": nll_k}
    previous = json.loads(saved.read_text()) if saved.exists() else {}
    row = previous if previous.get("settings") == settings else {}
    missing = [m for m in masks if f"inpaint_mse[{m}]" not in row]
    if row and not missing:
        return row
    trainer = Trainer(config, workdir)  # a finished run is restored, not trained again
    start = time.perf_counter()
    state = trainer.run()
    if int(state.step) < config.num_steps:  # stopped early (SIGTERM saves and returns): no row
        sys.exit(f"{workdir} stopped at step {int(state.step)} of {config.num_steps}; rerun")
    if not row:
        seconds = time.perf_counter() - start
        if previous.get("settings", {}).get("num_steps") == config.num_steps:
            seconds = previous["train_seconds"]  # scored again: the training's time, kept
        values = evaluate(
            trainer.experiment,
            state,
            trainer.train_source,
            trainer.test_source,
            num_samples=config.eval.num_samples,
            nll_k=nll_k,
            seed=seed,
        )
        row = values | {"train_seconds": seconds, "settings": settings}
    test = trainer.test_source.to_arrays() if missing else None
    for mask in missing:
        scores = inpaint_metrics(
            trainer.experiment, state, trainer.train_source, test, mask, seed=seed
        )
        row |= {f"{key}[{mask}]": scores[key] for key in INPAINT_KEYS}
    saved.write_text(json.dumps(row) + "\n")
    return row


def base_name(name: str) -> str:
    """The config file a name CONFIG[+KEY=VALUE...] is of: CONFIG."""
    return name.split("+")[0]


def variant_config(name: str):
    """The config of CONFIG[+KEY=VALUE...]: configs/CONFIG.py's with each override applied,
    VALUE read as the field's type (as train.py's --config.KEY=VALUE)."""
    base, *overrides = name.split("+")
    config = importlib.import_module(f"configs.{base}").get_config()
    for override in overrides:
        key, _, value = override.partition("=")
        config.update_from_flattened_dict({key: _parsed(value, config, key)})
    return config


def _parsed(text: str, config, key: str):
    """A command-line value as the type of config field `key`."""
    import ast

    current = config
    for part in key.split("."):
        current = current[part]
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string
    return type(current)(value) if current is not None else value


def config_names(text: str, words: tuple[str, ...] = ()) -> list[str]:
    """--configs' names: split at commas, except those inside a variant's value (a piece that
    names no config file, nor one of `words` such as 'all', joins the one before, as in
    `dcgan_mnist+gan.augment=color,cutout`)."""
    names: list[str] = []
    for piece in text.split(","):
        known = piece in words or (ROOT / "configs" / f"{base_name(piece)}.py").is_file()
        if names and not known:
            names[-1] += "," + piece
        else:
            names.append(piece)
    return names


def summarise(name: str, rows: list[dict], masks: tuple[str, ...] = ()) -> list[str]:
    lines = []
    inpainting = [f"{key}[{mask}]" for mask in masks for key in INPAINT_KEYS]
    for key in KEYS[base_name(name)] + inpainting + ["train_seconds"]:
        values = np.array([r.get(key, np.nan) for r in rows], float)
        floor = np.array([r.get(f"{key}_floor", np.nan) for r in rows], float)
        cell = f"{np.nanmean(values):.4g} ± {np.nanstd(values):.2g}" if values.size else "-"
        floor_cell = f"{np.nanmean(floor):.4g}" if np.isfinite(floor).any() else ""
        per_seed = ", ".join(f"{v:.4g}" for v in values)
        lines.append(f"| {name} | {key} | {cell} | {floor_cell} | {per_seed} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="gan_ring8,gan_grid25")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--num_steps", type=int, default=0, help="0 = the config's")
    parser.add_argument("--nll_k", type=int, default=5000)
    parser.add_argument("--inpaint_masks", default="", help="e.g. bottom,centre; '' = none")
    parser.add_argument("--runs", default="runs/quality")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    from genjax.backend import unroll_large_threefry_on_cpu

    unroll_large_threefry_on_cpu()  # as train.py does
    seeds = [int(s) for s in args.seeds.split(",")]
    masks = tuple(m for m in args.inpaint_masks.split(",") if m)
    lines = [
        f"Seeds {args.seeds}; `python benchmarks/quality.py --configs {args.configs} "
        f"--seeds {args.seeds}"
        + (f" --num_steps {args.num_steps}" if args.num_steps else "")
        + (f" --nll_k {args.nll_k}" if args.nll_k != 5000 else "")
        + (f" --inpaint_masks {args.inpaint_masks}" if masks else "")
        + "`",
        "",
        "| config | metric | mean ± std over seeds | real-vs-real floor | per seed |",
        "|---|---|---|---|---|",
    ]
    for name in config_names(args.configs):
        rows = []
        for seed in seeds:
            row = run_one(name, seed, ROOT / args.runs, args.num_steps, args.nll_k, masks)
            print(json.dumps({"config": name, "seed": seed} | row), flush=True)
            rows.append(row)
        lines += summarise(name, rows, masks)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
