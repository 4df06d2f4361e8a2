"""Loader for the natural-text corpus (data/corpus/corpus.txt.xz, built by
tools/corpus/build_corpus.py): documents separated by 0x1e, split by a hash of their text.

split "train": documents with sha256(text)[0] >= 26 (training haystacks, LM objective);
split "heldout": sha256(text)[0] < 26 (haystacks of eval and trace prompts).
Each split is one uint8 array, documents joined by "\n", plus the positions of its newlines and
an index of package one-liners "NAME: SUMMARY" (summary <= 48 bytes) for the sentence task.
"""
import hashlib
import lzma
import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_PATH = os.path.join(ROOT, "data", "corpus", "corpus.txt.xz")
SHA256 = "2409b4125bf6933c0dbfebe1c56d5e1f16ad364e44697dd7c617d2cd1dce9b73"  # of the decompressed text
HELDOUT_BELOW = 26
ENTRY_RE = re.compile(rb"^([a-z0-9][a-z0-9+.\-]{1,40}): ([^\n]{4,48})$")

_cache = {}


class Split:
    def __init__(self, docs):
        self.text = np.frombuffer(b"\n".join(docs), dtype=np.uint8)
        self.newlines = np.flatnonzero(self.text == 10)
        ent = []
        off = 0
        for d in docs:
            if b"\n" not in d:
                m = ENTRY_RE.match(d)
                if m:
                    ent.append((off, len(m.group(1)), len(d)))  # start, name length, line length
            off += len(d) + 1
        self.entries = np.array(ent, dtype=np.int64).reshape(-1, 3)

    def __len__(self):
        return len(self.text)


def load(path=DEFAULT_PATH, check=True):
    """Returns {"train": Split, "heldout": Split}; cached per process."""
    if path in _cache:
        return _cache[path]
    raw = lzma.open(path).read()
    if check and hashlib.sha256(raw).hexdigest() != SHA256:
        raise ValueError(f"{path}: sha256 {hashlib.sha256(raw).hexdigest()} != documented {SHA256}")
    docs = raw.split(b"\x1e")
    held = [d for d in docs if hashlib.sha256(d).digest()[0] < HELDOUT_BELOW]
    train = [d for d in docs if hashlib.sha256(d).digest()[0] >= HELDOUT_BELOW]
    _cache[path] = {"train": Split(train), "heldout": Split(held)}
    return _cache[path]
