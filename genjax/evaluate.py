"""The evaluation CLI: `python -m genjax.evaluate --workdir DIR [...]` (genjax.metrics.evaluate)."""

from genjax.metrics.evaluate import cli_main

if __name__ == "__main__":
    cli_main()
