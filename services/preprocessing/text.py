"""Short documents → a hashed bag of n-grams (the built-in text models' input) and a drift signature.

Hashing (CRC-32 of each n-gram, modulo `hash_dim`) needs no vocabulary, so the same function
runs in ingest, the trainer and the gateway with nothing fitted to ship; the weighting that is
fitted (inverse document frequency) lives inside the exported model.

The signature the monitor tests: length, token count, mean token length, the shares of digits,
upper-case letters, punctuation and non-ASCII characters, and a 16-dimensional signed hashing
embedding of the n-grams (a fixed random projection: a change of vocabulary or topic moves it).
"""

from __future__ import annotations

import re
import unicodedata
import zlib

import numpy as np

from services.preprocessing.errors import InvalidField
from services.projects.spec import TextInput

EMBEDDING_DIM = 16
STATS = ("log_chars", "log_tokens", "mean_token_len", "digit_share", "upper_share", "punct_share", "non_ascii_share")
WORD = re.compile(r"\w+", re.UNICODE)
# Control characters other than tab, line feed and carriage return have no place in a document.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class TextCodec:
    def __init__(self, spec: TextInput) -> None:
        self.spec = spec

    @property
    def signature_names(self) -> list[str]:
        return [*STATS, *(f"emb{i}" for i in range(EMBEDDING_DIM))]

    def check(self, text: object) -> str:
        if not isinstance(text, str):
            raise InvalidField("", f"must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InvalidField("", "is empty")
        if len(text) > self.spec.max_chars:
            raise InvalidField("", f"is {len(text)} characters; the limit is {self.spec.max_chars}")
        bad = CONTROL.search(text)
        if bad is not None:
            raise InvalidField("", f"contains the control character U+{ord(bad.group()):04X} at {bad.start()}")
        return unicodedata.normalize("NFC", text)

    def from_bytes(self, data: bytes) -> str:
        try:
            return self.check(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidField("", f"not UTF-8 text: {exc}") from None

    def ngrams(self, text: str) -> list[str]:
        s = self.spec
        norm = unicodedata.normalize("NFKC", text)
        if s.lowercase:
            norm = norm.lower()
        if s.analyzer == "word":
            tokens = WORD.findall(norm)
            sep = " "
        else:
            tokens = list(" ".join(norm.split()))
            sep = ""
        grams = []
        for n in range(s.ngram_min, s.ngram_max + 1):
            grams += [sep.join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return grams

    def vector(self, text: str) -> np.ndarray:
        """The model input: n-gram counts hashed into `hash_dim` float32 buckets."""
        out = np.zeros(self.spec.hash_dim, dtype=np.float32)
        for gram in self.ngrams(text):
            out[zlib.crc32(gram.encode()) % self.spec.hash_dim] += 1.0
        return out

    def signature(self, text: str) -> np.ndarray:
        chars = max(len(text), 1)
        tokens = WORD.findall(text)
        stats = [
            np.log1p(len(text)),
            np.log1p(len(tokens)),
            float(np.mean([len(t) for t in tokens])) if tokens else 0.0,
            sum(c.isdigit() for c in text) / chars,
            sum(c.isupper() for c in text) / chars,
            sum(unicodedata.category(c).startswith("P") for c in text) / chars,
            sum(ord(c) > 127 for c in text) / chars,
        ]
        emb = np.zeros(EMBEDDING_DIM, dtype=np.float64)
        grams = self.ngrams(text)
        for gram in grams:
            h = zlib.crc32(b"embedding\0" + gram.encode())
            emb[h % EMBEDDING_DIM] += 1.0 if (h >> 16) & 1 else -1.0
        emb /= np.sqrt(max(len(grams), 1))
        return np.asarray([*stats, *emb], dtype=np.float32)
