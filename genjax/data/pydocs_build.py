"""How genjax/data/pydocs.txt.gz was made: English sentences of CPython 3.11.7's own
documentation, tokenised and frozen, so the corpus is the same on every Python version.

    python -m genjax.data.pydocs_build OUT.txt.gz   # reproduces the file under CPython 3.11.7

Sources (both ship with CPython, under the PSF License Version 2, genjax/data/pydocs_LICENSE.txt):
the language reference's topics (`pydoc_data.topics`, what `help('assert')` shows) and the
docstrings of the standard library's modules, classes and functions (Lib/*.py, without the
test suites, idlelib, lib2to3, tkinter and turtledemo). Prose paragraphs only (indented code,
doctest blocks and headings dropped), cut into sentences at `.`, `!` or `?` followed by a
capital, lowercased and split into words, numbers and single punctuation marks; sentences of
4 to 30 tokens, each once, in order of first appearance, then shuffled with numpy's PCG64
seeded 0. One sentence per line, tokens separated by single spaces; the last TEST_SIZE lines
are the fixed test split.
"""

from __future__ import annotations

import ast
import gzip
import re
import sys
import sysconfig
from pathlib import Path

import numpy as np

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
TOKEN = re.compile(r"[a-z][a-z0-9_]*(?:'[a-z]+)?|\d+(?:\.\d+)?|[^\sa-z\d]")
SKIPPED_DIRS = ("test", "site-packages", "idlelib", "lib2to3", "tkinter", "turtledemo")
MIN_TOKENS, MAX_TOKENS = 4, 30


def topic_paragraphs():
    """Prose paragraphs of the language reference's topics (headings and code dropped)."""
    import pydoc_data.topics

    for text in pydoc_data.topics.topics.values():
        for paragraph in re.split(r"\n\s*\n", text):
            lines = paragraph.split("\n")
            if lines[0].startswith("   ") or re.fullmatch(r"[*=\-~^]+", lines[-1].strip()):
                continue
            yield " ".join(line.strip() for line in lines)


def docstring_paragraphs():
    """Prose paragraphs of the standard library's docstrings (code and doctests dropped)."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for path in sorted(lib.rglob("*.py")):
        parts = path.relative_to(lib).parts
        if parts[0] in SKIPPED_DIRS or "tests" in parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            doc = ast.get_docstring(node) if isinstance(node, kinds) else None
            for paragraph in re.split(r"\n\s*\n", doc or ""):
                lines = paragraph.split("\n")
                if lines[0].startswith((" ", ">>>")) or any(">>>" in line for line in lines):
                    continue
                yield " ".join(line.strip() for line in lines)


def sentences(paragraphs) -> list[str]:
    """Tokenised sentences of MIN_TOKENS..MAX_TOKENS tokens, each once, in first-seen order."""
    out = {}
    for paragraph in paragraphs:
        for sentence in SENTENCE_END.split(paragraph):
            sentence = sentence.strip()
            if not sentence or not sentence[0].isupper() or not sentence.endswith((".", "?", "!")):
                continue
            tokens = TOKEN.findall(sentence.lower())
            if MIN_TOKENS <= len(tokens) <= MAX_TOKENS:
                out.setdefault(" ".join(tokens), None)
    return list(out)


def build() -> list[str]:
    lines = sentences([*topic_paragraphs(), *docstring_paragraphs()])
    order = np.random.default_rng(0).permutation(len(lines))
    return [lines[i] for i in order]


def main(out: str) -> None:
    lines = build()
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with open(out, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(data)
    print(f"{len(lines)} sentences, {sum(len(s.split()) for s in lines)} tokens -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
