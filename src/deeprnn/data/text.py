"""Text corpora as streams of token ids: Penn Treebank (words, the paper's characters, the
``ptb.char`` layout) and the user's own corpus at word or character level.

Every corpus has a *boundary* token that ends a line (``<eos>`` for words, the newline for
the paper's characters); it is also the context before the first token of a split, so that
every token of a split is predicted, and counted, exactly once.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deeprnn.data.registry import DataError
from deeprnn.names import SPLITS

EOS = "<eos>"
UNK = "<unk>"


@dataclass
class TextCorpus:
    """Token-id streams per split and the vocabulary (id -> symbol) of the training split."""

    name: str
    level: str  # "word" or "char"
    vocab: list[str]
    splits: dict[str, torch.Tensor]  # int64 streams
    boundary: int  # id of the line-end token

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def space(self) -> str:
        """The symbol of a space between words: '_' in the ptb.char files, else ' '."""
        return "_" if self.name == "ptb-pennchar" else " "

    def encode(self, text: str) -> list[int]:
        """Text as ids, the inverse of :meth:`decode` (a primer to sample from). A symbol
        outside the vocabulary becomes ``<unk>`` where the vocabulary has it, else an error."""
        if self.level == "word":
            symbols = []
            for line in text.splitlines(keepends=True):
                symbols += line.split() + ([EOS] if line.endswith("\n") else [])
        else:
            space = self.space
            newline = EOS if EOS in self.vocab else "\n"
            symbols = [newline if c == "\n" else space if c == " " else c for c in text]
        index = {s: i for i, s in enumerate(self.vocab)}
        unknown = sorted({s for s in symbols if s not in index})
        if unknown and UNK not in index:
            shown = ", ".join(repr(s) for s in unknown[:5])
            raise DataError(f"{shown}: not in the vocabulary of {self.name} (and it has no {UNK})")
        return [index.get(s, index.get(UNK, -1)) for s in symbols]

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        symbols = [self.vocab[int(i)] for i in ids]
        if self.level == "char":
            space = self.space
            return "".join("\n" if s == EOS else " " if s == space else s for s in symbols)
        lines, words = [], []
        for symbol in symbols:
            if symbol == EOS:
                lines.append(" ".join(words) + "\n")
                words = []
            else:
                words.append(symbol)
        return "".join(lines) + " ".join(words)


def read_text(path: Path) -> str:
    """The file as text; a clear error for a missing, empty or non-UTF-8 file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing text file {path}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not UTF-8 text (byte {error.start}: {data[error.start : error.start + 1]!r}); "
            "convert it to UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty; every split needs text")
    return text


def word_tokens(text: str) -> list[str]:
    """Words of each line, split at white space, then the end-of-line token."""
    tokens = []
    for line in text.splitlines():
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def paper_chars(text: str) -> list[str]:
    """The paper's PTB character stream: each line without its leading space, newline kept."""
    out = []
    for line in text.splitlines(keepends=True):
        out.extend(line[1:] if line.startswith(" ") else line)
    return out


def build_corpus(
    name: str, level: str, tokens: dict[str, list[str]], boundary: str, open_vocab: bool
) -> TextCorpus:
    """Encode token lists with the vocabulary of the training split.

    ``open_vocab``: symbols unseen in training become ``<unk>`` (added to the vocabulary);
    otherwise (Penn Treebank, whose vocabulary is closed) an unseen symbol is an error."""
    for split in SPLITS:
        if not tokens[split]:
            raise DataError(f"{name}: the {split} split is empty")
    counts = Counter(tokens["train"])
    vocab = sorted(counts)
    if boundary not in counts:
        vocab.append(boundary)
    index = {s: i for i, s in enumerate(vocab)}
    if open_vocab and UNK not in index:
        unseen = any(t not in index for split in ("valid", "test") for t in tokens[split])
        if unseen:
            index[UNK] = len(vocab)
            vocab.append(UNK)
    splits = {}
    for split in SPLITS:
        if open_vocab:
            unk = index.get(UNK, -1)
            ids = [index.get(t, unk) for t in tokens[split]]
        else:
            try:
                ids = [index[t] for t in tokens[split]]
            except KeyError as error:
                raise DataError(f"{name}: {split} holds {error.args[0]!r}, unseen in train") from None
        splits[split] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    return TextCorpus(name, level, vocab, splits, index[boundary])


def load_ptb(name: str, files: dict[str, Path]) -> TextCorpus:
    """``ptb-word``, ``ptb-char`` (the paper's) or ``ptb-pennchar`` from its ``files`` per split."""
    texts = {s: read_text(p) for s, p in files.items()}
    if name == "ptb-pennchar":  # symbols separated by spaces (``_`` between words): read as words
        return build_corpus(
            name, "char", {s: word_tokens(t) for s, t in texts.items()}, EOS, open_vocab=False
        )
    if name == "ptb-word":
        return build_corpus(
            name, "word", {s: word_tokens(t) for s, t in texts.items()}, EOS, open_vocab=False
        )
    if name == "ptb-char":
        return build_corpus(
            name, "char", {s: paper_chars(t) for s, t in texts.items()}, "\n", open_vocab=False
        )
    raise DataError(f"unknown Penn Treebank variant {name!r}")


def load_text_folder(folder: str | os.PathLike, level: str = "word") -> TextCorpus:
    """A user's corpus: ``train.txt``, ``valid.txt``, ``test.txt`` in ``folder``, at word level
    (white-space tokens, ``<eos>`` per line) or character level (newline a symbol)."""
    folder = Path(folder)
    if level not in ("word", "char"):
        raise DataError(f"text level must be 'word' or 'char', got {level!r}")
    missing = [s for s in SPLITS if not (folder / f"{s}.txt").exists()]
    if missing:
        raise DataError(f"{folder}: expected train.txt, valid.txt and test.txt; missing {', '.join(missing)}")
    texts = {s: read_text(folder / f"{s}.txt") for s in SPLITS}
    if level == "word":
        return build_corpus(folder.name, "word", {s: word_tokens(t) for s, t in texts.items()}, EOS, True)
    return build_corpus(folder.name, "char", {s: list(t) for s, t in texts.items()}, "\n", True)


def pennchar_from_words(text: str) -> str:
    """The ``ptb.char`` file made from a word file: ``c(w1) _ c(w2) … `` + newline per line,
    c(w) the characters of w joined by spaces, ``<unk>`` kept whole."""
    lines = []
    for line in text.splitlines():
        words = [w if w == UNK else " ".join(w) for w in line.split()]
        lines.append(" _ ".join(words) + " \n")
    return "".join(lines)
