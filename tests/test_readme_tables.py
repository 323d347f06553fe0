"""benchmarks/readme_tables.py: README's summary tables follow from the files in docs/.

No training and no timing: the tables are read from small files written here and from the
committed docs/, and README.md must hold each table exactly as the script prints it.
"""

from types import SimpleNamespace

from conftest import ROOT

from benchmarks import readme_tables

THROUGHPUT_MD = """| config | examples/s |
|---|---|
| a | 1 |

cpu x1, host 2 CPUs (AMD EPYC); jax 0.10.2; 1-min load average 1.4 at the start, 1.8 at the end
float32 matmuls and convolutions: IEEE float32
"""

QUALITY_MD = """Seeds 0,1; `python benchmarks/quality.py --configs toy,vae --seeds 0,1`

| config | metric | mean ± std over seeds | real-vs-real floor | per seed |
|---|---|---|---|---|
| toy | modes | 8 ± 0 |  | 8, 8 |
| toy | hq_fraction | 0.96 ± 0.01 |  | 0.95, 0.97 |
| toy | train_seconds | 70.4 ± 2 |  | 68.4, 72.4 |
| vae | test_nll | 90 ± 1 |  | 89, 91 |
| vae | fd_classifier | 40 ± 2 | 9.5 | 38, 42 |
"""

OTHER_MD = """Seeds 0; `python benchmarks/quality.py --configs vae,gan --seeds 0`

| config | metric | mean ± std over seeds | real-vs-real floor | per seed |
|---|---|---|---|---|
| vae | test_nll | 99 ± 0 |  | 99 |
| gan | fd_classifier | 60 ± 0 | 9.7 | 60 |
| gan | precision_classifier | 0.5 ± 0 | 0.86 | 0.5 |
"""


def test_machine_line_drops_the_load_average():
    assert readme_tables.machine_line(THROUGHPUT_MD) == "cpu x1, host 2 CPUs (AMD EPYC); jax 0.10.2"


def test_speed_table_formats_each_row():
    rows = [
        {"config": "b", "examples_per_s": 1234.4, "mfu": 0.5},
        {"config": "c", "examples_per_s": 1.876, "torch_examples_per_s": 2.17, "mfu": 0.8},
        {
            "config": "a",
            "examples_per_s": 29780.2,
            "torch_examples_per_s": 18412.0,
            "speedup_vs_torch": 1.6174,
            "mfu": 0.6581,
        },
    ]
    lines = readme_tables.speed_table(rows, "cpu x1").splitlines()
    assert lines[2] == "| a | 29,780 | 18,412 | 1.62x | 65.8% |"
    assert lines[3] == "| b | 1,234 |  |  | 50.0% |"  # no torch columns measured
    assert lines[4] == "| c | 1.88 | 2.17 |  | 80.0% |"  # below 100: three figures
    assert lines[-1].startswith("Machine: cpu x1. Made by `taskset -c 0 python benchmarks/")


def test_quality_rows_come_from_the_first_table_that_has_the_config(tmp_path, monkeypatch):
    (tmp_path / "quality.md").write_text(QUALITY_MD)
    (tmp_path / "quality_other.md").write_text(OTHER_MD)
    monkeypatch.setattr(readme_tables, "QUALITY_TABLES", ("quality.md",))
    quality = readme_tables.read_quality(tmp_path)
    assert quality["vae"]["file"] == "quality.md"  # not quality_other.md's 99
    assert quality["gan"]["file"] == "quality_other.md"
    assert quality["toy"]["command"].endswith("--seeds 0,1 --out docs/quality.md")
    assert readme_tables.headline(quality["toy"]["metrics"]) == ["modes", "hq_fraction"]
    assert readme_tables.headline(quality["vae"]["metrics"]) == ["test_nll"]
    assert readme_tables.headline(quality["gan"]["metrics"]) == ["fd_classifier"]
    inpainting = {"test_nll": {}, "inpaint_mse[centre]": {}, "inpaint_mse[bottom]": {}}
    own = ["inpaint_mse[bottom]", "inpaint_mse[centre]"]  # OWN_HEADLINES' order
    assert readme_tables.headline(inpainting, "masked_vae_mnist") == own
    assert readme_tables.headline(inpainting, "masked_vae_mnist+seed=1") == ["test_nll"]
    assert readme_tables.headline(inpainting, "vae_mlp_mnist") == ["test_nll"]
    table = readme_tables.quality_table(quality)
    assert "| vae | test_nll | 90 ± 1 |  | 0,1 | [quality.md](docs/quality.md) |" in table
    assert "| gan | fd_classifier | 60 ± 0 | 9.7 | 0 |" in table
    assert "precision_classifier" not in table
    assert "- `python benchmarks/quality.py --configs vae,gan --seeds 0 --out" in table


def test_configs_table_joins_config_times_and_quality(tmp_path, monkeypatch):
    (tmp_path / "quality.md").write_text(QUALITY_MD)
    monkeypatch.setattr(readme_tables, "QUALITY_TABLES", ("quality.md",))
    quality = readme_tables.read_quality(tmp_path)
    configs = {
        "toy": SimpleNamespace(num_steps=10000, batch_size=256, data=SimpleNamespace(train="r8")),
        "new": SimpleNamespace(num_steps=5, batch_size=8, data=SimpleNamespace(train="mnist5k")),
    }
    times = [{"config": "toy", "wall time (s)": "65"}]
    table = readme_tables.configs_table(
        ["new", "toy"], configs.__getitem__, times, quality, lambda name: f"{name} model"
    )
    lines = table.splitlines()
    assert lines[2] == "| `new` | new model | mnist5k | 5 steps, batch 8 | — | — | — |"
    expected = (
        "| `toy` | toy model | r8 | 10,000 steps, batch 256 | 65 | 70 | modes 8, hq_fraction 0.96 |"
    )
    assert lines[3] == expected


def test_readme_holds_the_tables_the_script_prints():
    readme = (ROOT / "README.md").read_text()
    for name, table in readme_tables.tables(list(readme_tables.TABLES)).items():
        assert table in readme, f"README's {name} table is not `readme_tables.py`'s output"


def test_unknown_table_is_refused(capsys):
    try:
        readme_tables.main(["--tables", "speed,nope"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("accepted an unknown table")
    assert "nope" in capsys.readouterr().err
