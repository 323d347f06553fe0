"""Token sequences: a word-level vocabulary, text sources and the `tokens` data kind.

An example is `{'tokens': int32 (max_len,)}`: a sentence's word ids, then `<eos>`, then
`<pad>` (id 0) to `data.max_len`; its mask is `tokens != PAD`. A sentence of more than
max_len - 1 words keeps its first max_len - 1 (it is counted in `Source.truncated`, not
refused). Decoders read `<bos>` followed by the sentence, which the models prepend.

The vocabulary is the `data.vocab_size` - 4 most frequent training words after the four
special tokens `<pad>`, `<bos>`, `<eos>`, `<unk>` (the Penn Treebank convention of Mikolov's
preprocessing that Bowman et al. 2016 train on; ties broken alphabetically); every other word
is `<unk>`. Training writes it to the workdir (`vocab.txt`, one token per line, in id order),
and sample.py and evaluate read it back there, so they decode with the vocabulary training
used. `data.vocab = FILE` names a vocabulary file to use instead of building one.

Sources of token data:

- `pydocs`: 11,954 English sentences of CPython 3.11.7's documentation, frozen in
  genjax/data/pydocs.txt.gz (genjax/data/pydocs_build.py made it; PSF License); the last
  1,000 are the test split.
- `text:FILE`: one sentence per line, tokens separated by whitespace (as PTB is distributed;
  nothing is lowercased or split); the test split is the last 10% of the lines.
- `text:DIR`: `train.txt` and `test.txt` in DIR (PTB's `ptb.train.txt` / `ptb.test.txt`
  names also work); `valid.txt` is not read.
- `tfds:NAME:FIELD`: the text feature FIELD of a TFDS data set (`tfds:lm1b:text`,
  `tfds:wikipedia/20230601.en:text`); each record is one example, its first sentence,
  lowercased and split into words, numbers and punctuation as pydocs was. The vocabulary is
  built from the first VOCAB_SCAN training records.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from genjax.config import ConfigError
from genjax.data.arrays import Source, holdout_indices
from genjax.data.errors import data_error
from genjax.data.kinds import DataKind, register_kind

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
KIND = "tokens"
VOCAB_FILE = "vocab.txt"  # in the workdir
VOCAB_SCAN = 100_000  # TFDS records read to build a vocabulary
PYDOCS = Path(__file__).with_name("pydocs.txt.gz")
PYDOCS_TEST = 1000  # the last lines of pydocs.txt.gz
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
WORD = re.compile(r"[a-z][a-z0-9_]*(?:'[a-z]+)?|\d+(?:\.\d+)?|[^\sa-z\d]")
VERSION = re.compile(r"\d+(\.\d+)*")  # tfds:NAME:VERSION, e.g. mnist:3.0.1


# ---------------------------------------------------------------- vocabulary


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Tokens in id order, the four SPECIALS first."""

    tokens: tuple[str, ...]

    def __post_init__(self):
        if self.tokens[: len(SPECIALS)] != SPECIALS:
            raise ConfigError(
                f"a vocabulary starts with {', '.join(SPECIALS)} (ids 0-3), got "
                f"{', '.join(self.tokens[:4])}"
            )

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, sentences, size: int) -> Vocabulary:
        """The SPECIALS and the size - 4 most frequent words of `sentences` (lists of words);
        ties in count are broken alphabetically, so the vocabulary is a function of the data."""
        counts = collections.Counter(w for s in sentences for w in s if w not in SPECIALS)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls(SPECIALS + tuple(w for w, _ in ranked[: size - len(SPECIALS)]))

    @classmethod
    def read(cls, path) -> Vocabulary:
        """A vocabulary file: one token per line, in id order."""
        try:
            lines = Path(path).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"vocabulary {path}: cannot read it ({e})") from None
        tokens = tuple(line for line in lines if line)
        if tokens[: len(SPECIALS)] != SPECIALS or len(set(tokens)) != len(tokens):
            raise ConfigError(
                f"vocabulary {path}: not a vocabulary file (one distinct token per line, "
                f"starting with {', '.join(SPECIALS)})"
            )
        return cls(tokens)

    def write(self, path) -> None:
        Path(path).write_text("\n".join(self.tokens) + "\n", encoding="utf-8")

    def encode(self, sentences, max_len: int) -> tuple[np.ndarray, int]:
        """(int32 (N, max_len) ids: words, <eos>, <pad>...; sentences cut to max_len - 1 words)."""
        index = self.index
        out = np.zeros((len(sentences), max_len), np.int32)
        truncated = 0
        for row, words in zip(out, sentences, strict=True):
            if len(words) > max_len - 1:
                truncated += 1
                words = words[: max_len - 1]
            row[: len(words)] = [index.get(w, UNK_ID) for w in words]
            row[len(words)] = EOS_ID
        return out, truncated

    def words(self, ids) -> list[str]:
        """The words of one row of ids, up to its first <eos> or <pad>."""
        out = []
        for i in np.asarray(ids).tolist():
            if i in (EOS_ID, PAD_ID):
                break
            out.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return out

    def decode(self, tokens) -> list[str]:
        """Rows of ids -> sentences (words joined by spaces)."""
        return [" ".join(self.words(row)) for row in np.asarray(tokens)]


@dataclasses.dataclass(frozen=True)
class TextOptions:
    """How sentences become token rows: `data.vocab_size`, `data.max_len`, `data.vocab`
    (a vocabulary file; '' = build one), or a Vocabulary given (the training one, for a test
    source)."""

    vocab_size: int = 10_000
    max_len: int = 32
    vocab: str = ""
    vocabulary: Vocabulary | None = None

    @classmethod
    def from_config(cls, data_config) -> TextOptions:
        return cls(
            int(data_config.get("vocab_size", 10_000)),
            int(data_config.get("max_len", 32)),
            str(data_config.get("vocab", "") or ""),
        )

    def check(self, spec: str) -> None:
        if self.vocab_size <= len(SPECIALS):
            raise data_error(
                spec,
                f"data.vocab_size={self.vocab_size} leaves no room for words beside the "
                f"{len(SPECIALS)} special tokens {', '.join(SPECIALS)}; valid: >= "
                f"{len(SPECIALS) + 1}",
            )
        if self.max_len < 2:
            raise data_error(spec, f"data.max_len={self.max_len}; valid: >= 2 (a word and <eos>)")

    def vocabulary_for(self, spec: str, train_sentences) -> Vocabulary:
        """The given vocabulary, the file data.vocab, or one built from the training data."""
        vocabulary = self.vocabulary
        if vocabulary is None and self.vocab:
            vocabulary = Vocabulary.read(self.vocab)
        if vocabulary is None:
            return Vocabulary.build(train_sentences, self.vocab_size)
        if len(vocabulary) > self.vocab_size:
            raise data_error(
                spec,
                f"the vocabulary has {len(vocabulary)} tokens, over data.vocab_size="
                f"{self.vocab_size}; set --config.data.vocab_size={len(vocabulary)}",
            )
        return vocabulary


def options_for_test(options: TextOptions | None, train: Source) -> TextOptions | None:
    """A test source's options: the training source's vocabulary, when it has one."""
    vocabulary = getattr(train, "vocab", None)
    if options is None or vocabulary is None:
        return options
    return dataclasses.replace(options, vocabulary=vocabulary)


def workdir_config(config, workdir):
    """`config` reading the vocabulary a workdir holds (sample.py, evaluate): data.vocab set
    to workdir/vocab.txt when it is there and data.vocab is ''."""
    path = Path(workdir) / VOCAB_FILE
    if path.is_file() and not config.data.get("vocab"):
        config = config.copy_and_resolve_references()
        config.data.vocab = str(path)
    return config


# ------------------------------------------------------------------- sources


class TokenSource(Source):
    """One split of token rows in memory, with its vocabulary and truncation count."""

    def __init__(self, tokens: np.ndarray, vocab: Vocabulary, truncated: int):
        tokens = tokens.view()
        tokens.flags.writeable = False
        self._tokens = tokens
        self.vocab = vocab
        self.truncated = truncated
        self.kind = KIND
        self.shape = tuple(tokens.shape[1:])
        self.num_classes = None

    def __len__(self) -> int:
        return len(self._tokens)

    def __getitem__(self, index: int) -> dict:
        return {"tokens": self._tokens[index]}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"tokens": self._tokens}

    def take(self, indices) -> dict[str, np.ndarray]:
        return {"tokens": self._tokens[indices]}


@dataclasses.dataclass(frozen=True)
class SentenceSplits:
    """A text data set as sentences (lists of words): train, and test or None (then the test
    split is the last 10% of train). `tokenized(options)` makes its Splits."""

    spec: str
    train: list | None
    test: list | None

    def __post_init__(self):
        for name, part in (("train", self.train), ("test", self.test)):
            if part is not None and not part:
                raise data_error(
                    self.spec, f"its {name} text has no sentences; give non-empty text"
                )

    def tokenized(self, options: TextOptions) -> TokenSplits:
        options.check(self.spec)
        train, test = self.train, self.test
        if train is not None and test is None:
            train_idx, test_idx = holdout_indices(None, len(train))
            if not len(test_idx) or not len(train_idx):
                raise data_error(
                    self.spec,
                    f"{len(train)} sentence(s) are too few for a 10% test split; give at least 2",
                )
            train, test = [train[i] for i in train_idx], [train[i] for i in test_idx]
        if train is None and options.vocabulary is None and not options.vocab:
            raise data_error(self.spec, "it has no training text to build a vocabulary from")
        vocab = options.vocabulary_for(self.spec, train or [])
        parts = {}
        for name, sentences in (("train", train), ("test", test)):
            if sentences is not None:
                parts[name] = vocab.encode(sentences, options.max_len)
        return TokenSplits(self.spec, vocab, parts, has_test=self.test is not None)


@dataclasses.dataclass(frozen=True)
class TokenSplits:
    """Token rows per split ({'train' | 'test': (tokens, truncated)}) and the vocabulary."""

    spec: str
    vocab: Vocabulary
    parts: dict
    has_test: bool

    def select(self, split: str) -> TokenSource:
        if split == "all":
            chosen = [self.parts[n] for n in ("train", "test") if n in self.parts]
            tokens = np.concatenate([t for t, _ in chosen])
            return TokenSource(tokens, self.vocab, sum(c for _, c in chosen))
        if split not in self.parts:
            raise data_error(self.spec, f"it has no {split} text")
        tokens, truncated = self.parts[split]
        return TokenSource(tokens, self.vocab, truncated)


def with_text(spec: str, splits, options: TextOptions | None, image_size: int, center_crop: int):
    """Splits of sentences tokenised with `options`; other splits as they are. Image options
    set for text are refused."""
    if not isinstance(splits, SentenceSplits):
        return splits
    if image_size or center_crop:
        raise data_error(
            spec,
            "data.image_size and data.center_crop apply to images; set them to 0 for text",
        )
    return splits.tokenized(options or TextOptions())


def read_lines(spec: str, path: Path) -> list[list[str]]:
    """A text file's non-empty lines split on whitespace; ConfigError for a binary or empty
    file, or one that is not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise data_error(spec, f"cannot read {path} ({e.strerror})") from None
    if b"\0" in raw[:65536]:
        raise data_error(spec, f"{path} is a binary file; valid: UTF-8 text, one sentence a line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise data_error(
            spec, f"{path} is not UTF-8 text (byte {e.start}); valid: UTF-8, one sentence a line"
        ) from None
    sentences = [line.split() for line in text.splitlines()]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise data_error(spec, f"{path} holds no sentences; valid: one sentence a line")
    return sentences


DIR_FILES = {"train": ("train.txt", "ptb.train.txt"), "test": ("test.txt", "ptb.test.txt")}


def load_text(spec: str, path, image_size: int = 0, center_crop: int = 0) -> SentenceSplits:
    """text:FILE (test = its last 10%) or text:DIR (train.txt and test.txt, or PTB's names)."""
    path = Path(path)
    if path.is_file():
        return SentenceSplits(spec, read_lines(spec, path), None)
    if not path.is_dir():
        raise data_error(spec, f"no such file or directory {path}")
    found = {}
    for split, names in DIR_FILES.items():
        files = [path / n for n in names if (path / n).is_file()]
        found[split] = read_lines(spec, files[0]) if files else None
    if found["train"] is None and found["test"] is None:
        raise data_error(
            spec,
            f"{path} holds neither train.txt nor test.txt (nor ptb.train.txt / ptb.test.txt)",
        )
    return SentenceSplits(spec, found["train"], found["test"])


def read_pydocs() -> list[list[str]]:
    with gzip.open(PYDOCS, "rt", encoding="utf-8") as f:
        return [line.split() for line in f.read().splitlines()]


def pydocs_splits(image_size: int = 0) -> SentenceSplits:
    """pydocs: 10,954 training and 1,000 test sentences (the file's last 1,000 lines)."""
    sentences = read_pydocs()
    return SentenceSplits("pydocs", sentences[:-PYDOCS_TEST], sentences[-PYDOCS_TEST:])


def words_of(text: str) -> list[str]:
    """The first sentence of a text, lowercased and split as pydocs was."""
    text = " ".join(str(text).split())
    first = SENTENCE_END.split(text, maxsplit=1)[0] if text else ""
    return WORD.findall(first.lower())


# ----------------------------------------------------------------- TFDS text


def tfds_text_field(arg: str) -> tuple[str, str | None]:
    """(TFDS name, text field or None) of the argument of tfds:NAME[:VERSION][:FIELD]."""
    name, colon, last = arg.rpartition(":")
    if colon and name and not VERSION.fullmatch(last):
        return name, last
    return arg, None


class TfdsTextSource(Source):
    """One split of a TFDS text data set, tokenised record by record on access."""

    def __init__(self, records, field: str, vocab: Vocabulary, max_len: int):
        self._records = records
        self._field = field
        self.vocab = vocab
        self._max_len = max_len
        self.truncated = 0  # counted as records are read
        self.kind = KIND
        self.shape = (max_len,)
        self.num_classes = None

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict:
        value = self._records[int(index)][self._field]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        tokens, truncated = self.vocab.encode([words_of(value)], self._max_len)
        self.truncated += truncated
        return {"tokens": tokens[0]}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return self.take(np.arange(len(self)))


def _text_features(features) -> list[str]:
    import tensorflow_datasets as tfds

    return [k for k, v in features.items() if isinstance(v, tfds.features.Text)]


@dataclasses.dataclass(frozen=True)
class TfdsTextSplits:
    spec: str
    name: str
    field: str
    data_dir: str
    split_names: tuple[str, ...]
    options: TextOptions

    @property
    def has_test(self) -> bool:
        return "test" in self.split_names

    def _records(self, split: str):
        from genjax.data.tfds_source import HOLDOUT_SPLITS, tfds_data_source

        tfds_split = split if self.has_test else HOLDOUT_SPLITS[split]
        if split == "all" and self.has_test:
            tfds_split = "train+test"
        records = tfds_data_source(self.spec, self.name, tfds_split, self.data_dir)
        if not len(records):
            raise data_error(self.spec, f"TFDS split {tfds_split!r} is empty; give another source")
        features = records.dataset_info.features
        if self.field not in features:
            valid = ", ".join(_text_features(features)) or "none"
            raise data_error(
                self.spec, f"has no feature {self.field!r}; its text features: {valid}"
            )
        return records

    @property
    def vocab(self) -> Vocabulary:
        return _tfds_vocabulary(self)

    def select(self, split: str) -> TfdsTextSource:
        records = self._records(split)
        return TfdsTextSource(records, self.field, self.vocab, self.options.max_len)


_VOCABS: dict = {}


def _tfds_vocabulary(splits: TfdsTextSplits) -> Vocabulary:
    """The options' vocabulary, or one built from the first VOCAB_SCAN training records."""
    key = (splits.spec, splits.data_dir, splits.options)
    if key not in _VOCABS:
        options = splits.options
        if options.vocabulary is not None or options.vocab:
            _VOCABS[key] = options.vocabulary_for(splits.spec, [])
        else:
            records = splits._records("train")
            sentences = []
            for i in range(min(len(records), VOCAB_SCAN)):
                value = records[i][splits.field]
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                sentences.append(words_of(value))
            _VOCABS[key] = Vocabulary.build(sentences, options.vocab_size)
    return _VOCABS[key]


def open_tfds_text(
    spec: str, name: str, field: str, data_dir: str, options: TextOptions | None, image_size, crop
) -> TfdsTextSplits:
    """tfds:NAME:FIELD: prepares the data set if needed and checks the field is text."""
    from genjax.data.tfds_source import tfds_data_source

    options = options or TextOptions()
    options.check(spec)
    if image_size or crop:
        raise data_error(
            spec, "data.image_size and data.center_crop apply to images; set them to 0 for text"
        )
    splits = tfds_data_source(spec, name, None, data_dir)
    split_names = tuple(splits) if isinstance(splits, dict) else ()
    if split_names and "train" not in split_names:
        raise data_error(
            spec, f"has no 'train' split (splits: {', '.join(split_names)}); genjax needs one"
        )
    out = TfdsTextSplits(spec, name, field, data_dir, split_names, options)
    out.select("train")  # the field is checked before anything runs
    return out


def missing_field_error(spec: str, features) -> ConfigError | None:
    """For tfds:NAME without a field on a data set with text features: the error naming them."""
    fields = _text_features(features)
    if not fields:
        return None
    return data_error(
        spec,
        f"a text data set: name its text field, tfds:NAME:FIELD; valid fields: "
        f"{', '.join(fields)} (e.g. {spec}:{fields[0]})",
    )


# ------------------------------------------------------------------ the kind


def render(sentences: list[str], width: int = 640) -> object:
    """A white PIL picture of numbered sentences, one a line; the text rides in info['text']."""
    from PIL import Image, ImageDraw

    lines = [f"{i + 1:3d}  {s}" for i, s in enumerate(sentences)]
    image = Image.new("RGB", (width, 14 * len(lines) + 8), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((4, 4 + 14 * i), line[:120], fill=(0, 0, 0))
    image.info["text"] = "\n".join(sentences)
    return image


class TokenKind(DataKind):
    """int32 token rows (max_len,): words, <eos>, <pad>; read by the text families only."""

    name = KIND
    keys = ("tokens",)
    modes = frozenset({"interpolate", "reconstruct"})

    def model_input(self, batch, value_range):
        return jnp.asarray(batch["tokens"], jnp.int32)

    def from_model(self, x, value_range):
        return x

    def stored(self, samples):
        return np.asarray(samples, np.int32)

    def picture(self, samples, reference, columns=None):
        vocab = getattr(reference, "vocab", None)
        rows = np.asarray(samples)
        if vocab is None:
            return render([" ".join(map(str, r)) for r in rows])
        return render(vocab.decode(rows))

    def write_workdir(self, workdir, train_source) -> None:
        """The vocabulary, workdir/vocab.txt, for sample.py and evaluate to decode with."""
        atomic = Path(workdir) / (VOCAB_FILE + ".tmp")
        train_source.vocab.write(atomic)
        atomic.replace(Path(workdir) / VOCAB_FILE)

    def read_workdir(self, config, workdir):
        """The vocabulary write_workdir wrote (workdir_config)."""
        return workdir_config(config, workdir)

    def check_family(self, config, family) -> None:
        """Only families that declare token data (`data_kinds`) train on it."""
        if KIND not in getattr(family, "data_kinds", ()):
            from genjax.models.registry import MODELS

            valid = sorted(
                n for n, e in MODELS.items() if KIND in getattr(e.family, "data_kinds", ())
            )
            raise ConfigError(
                f"model {config.model.name!r} (a {family.name}) does not take token sequences "
                f"(data {config.data.train!r}); valid models for text: {', '.join(valid)}"
            )

    def sample_metrics(self, experiment, generate, train_source, test, *, num_samples, seed, **_):
        from genjax.metrics import text as text_metrics

        vocab = train_source.vocab
        fake = np.asarray(generate(num_samples))
        train = train_source.to_arrays()["tokens"]
        return text_metrics.sample_metrics(fake, test["tokens"], train, vocab, seed=seed)


TOKENS = register_kind(TokenKind())


def tokenize_like(spec: str, text: str) -> list[str]:
    """A user's sentence split into tokens as the data set `spec` was: on whitespace for
    text:FILE|DIR, else lowercased into words, numbers and punctuation (pydocs, TFDS)."""
    if spec.startswith("text:"):
        return text.split()
    return WORD.findall(" ".join(text.split()).lower())
