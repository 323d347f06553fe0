"""Data: sources (embedded, TFDS, files) -> grain pipelines -> host batches.

`load_source(spec, split)` / `resolve_sources(config.data)` give random-access `Source`s;
`host_batches(source, ...)` turns one into an endless, resumable, per-process batch iterator.
"""

from genjax.data.embedded import MIXTURES
from genjax.data.pipeline import HostBatchIterator, host_batches
from genjax.data.sources import Source, load_source, resolve_sources

__all__ = [
    "MIXTURES",
    "HostBatchIterator",
    "Source",
    "host_batches",
    "load_source",
    "resolve_sources",
]
