"""Text data for a language-model task: token windows drawn from llm.c / modded-nanogpt shards (shards.py), and a
built-in real corpus every machine has, the running interpreter's standard-library source as bytes.

    python -m lai_bench.data.text --corpus python-stdlib --out data/python-stdlib [--max-files N]

writes DIR/train_000000.bin..., DIR/val_000000.bin... and DIR/manifest.json (see `build_stdlib_corpus`).
"""
import argparse
import hashlib
import json
import os
import platform
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .shards import (
    HEADER_BYTES,
    SHARD_MAGIC,
    SHARD_VERSION,
    ShardError,
    check_shard,
    find_shards,
    read_shard,
    write_shard,
)

__all__ = [
    "ShardError", "check_shard", "find_shards", "read_shard", "write_shard", "TokenWindows", "CORPORA",
    "build_stdlib_corpus", "stdlib_files", "main",
]

# ---------------------------------------------------------------------------------------------- token windows


class TokenWindows:
    """The shards, in order, as one token stream (each shard memory-mapped: nothing is loaded beyond the windows
    drawn), cut into windows of `seq_len` inputs and the `seq_len` next tokens as targets.

    Training windows are nanoGPT's get_batch (starts uniform over the whole stream, with replacement, free to cross
    a shard boundary) but drawn from a generator keyed on (seed, step, rank) instead of a global RNG: a run resumed
    at step k draws exactly the windows it would have drawn, with no loader state to save, and ranks draw
    independently. Evaluation windows are fixed: consecutive, non-overlapping, from the start of the stream.
    """

    def __init__(self, shards: str | os.PathLike | Sequence[str | os.PathLike], seq_len: int):
        if isinstance(shards, (str, os.PathLike)):
            shards = find_shards(shards)
        if not shards:
            raise ValueError("TokenWindows needs at least one shard")
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.paths = [Path(p) for p in shards]
        self.seq_len = seq_len
        self._tokens = [read_shard(p) for p in self.paths]
        self._starts = np.cumsum([0] + [len(t) for t in self._tokens])  # stream offset of each shard
        self.num_tokens = int(self._starts[-1])
        if self.num_tokens < seq_len + 1:
            raise ValueError(f"the shards hold {self.num_tokens} tokens, fewer than one window of seq_len + 1 = "
                             f"{seq_len + 1}")

    def span(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream as int64, read across shard boundaries."""
        pieces = []
        shard = int(np.searchsorted(self._starts, start, side="right")) - 1
        while length > 0:
            offset = start - int(self._starts[shard])
            piece = self._tokens[shard][offset:offset + length]
            pieces.append(piece)
            start, length, shard = start + len(piece), length - len(piece), shard + 1
        return np.concatenate(pieces).astype(np.int64)

    def _batch(self, starts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        windows = torch.from_numpy(np.stack([self.span(int(s), self.seq_len + 1) for s in starts]))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def train_starts(self, step: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> np.ndarray:
        """The `batch` window starts of (seed, step, rank): a pure function of those three, whatever was drawn
        before. `world` only checks `rank`; each rank draws its own batch (the global batch is batch x world)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside [0, world={world})")
        if min(step, seed) < 0:
            raise ValueError(f"step and seed must be non-negative, got step={step}, seed={seed}")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step, rank])))
        return rng.integers(0, self.num_tokens - self.seq_len, size=batch)

    def train_batch(self, step: int, batch: int, seed: int, rank: int = 0,
                    world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): int64 [batch, seq_len], y is x shifted by one token; windows from `train_starts`."""
        return self._batch(self.train_starts(step, batch, seed, rank, world))

    def eval_batches(self, batch: int, tokens: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) batches of the first `tokens` targets, the same every call (a fixed validation budget, as
        modded-nanogpt's 10,485,760 FineWeb validation tokens): window i has inputs [i T, (i+1) T) and the next
        tokens as targets, so every one of tokens 1..`tokens` is predicted exactly once. `tokens` must be a multiple
        of seq_len T; the last batch is smaller when the windows do not divide into `batch`."""
        if tokens <= 0 or tokens % self.seq_len:
            raise ValueError(f"the validation budget of {tokens} tokens must be a positive multiple of seq_len "
                             f"{self.seq_len}")
        if tokens + 1 > self.num_tokens:
            raise ValueError(f"a validation budget of {tokens} tokens needs {tokens + 1} tokens, the shards hold "
                             f"{self.num_tokens}")
        starts = range(0, tokens, self.seq_len)
        for i in range(0, len(starts), batch):
            yield self._batch(starts[i:i + batch])


# ---------------------------------------------------------------------------------------------- stdlib corpus

SEPARATOR = 0  # the byte after each file: NUL, which Python source never holds (files that do are skipped)
VAL_EVERY = 20  # file i (sorted) goes to val when i % 20 == 19
MAX_SHARD_TOKENS = 100_000_000  # as FineWeb's shards: the whole stdlib fits one train and one val shard
SKIPPED_FOLDERS = ("site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo",
                   "__pycache__")
SPLIT_RULE = (f"files sorted by relative path, numbered from 0; file i goes to val when i % {VAL_EVERY} == "
              f"{VAL_EVERY - 1}, to train otherwise")


def stdlib_files(root: Path) -> list[Path]:
    """The standard library's .py files under `root`, relative and sorted (POSIX path order), without third-party
    packages (site-packages), the regression tests (test/tests folders: generated and odd-encoded files, and most of
    the bytes) and the GUI tools (idlelib, tkinter, turtledemo). Symbolic links to folders are not followed."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in SKIPPED_FOLDERS]
        found += [(Path(folder) / n).relative_to(root) for n in names if n.endswith(".py")]
    return sorted(found, key=lambda p: p.as_posix())


@dataclass
class Split:
    """One split being assembled: its files, their bytes (each followed by the separator) and a running SHA-256."""
    name: str
    files: list[str] = field(default_factory=list)
    source_bytes: int = 0
    chunks: list[bytes] = field(default_factory=list)

    def add(self, relative: str, source: bytes) -> None:
        self.files.append(relative)
        self.source_bytes += len(source)
        self.chunks.append(source + bytes([SEPARATOR]))

    def tokens(self) -> np.ndarray:
        """Byte-level tokens: each byte is its own token (vocabulary 256), stored as uint16 like any shard."""
        return np.frombuffer(b"".join(self.chunks), dtype=np.uint8).astype("<u2")


def read_source(path: Path) -> bytes | None:
    """The file's bytes, or None for a file that is not UTF-8 or holds the separator byte (kept out so that every
    separator in the stream is a file boundary)."""
    source = path.read_bytes()
    try:
        source.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if bytes([SEPARATOR]) in source else source


def write_split(out: Path, split: Split, tokens: np.ndarray) -> list[str]:
    """Write the split's tokens as DIR/<split>_000000.bin... of at most MAX_SHARD_TOKENS each; stale shards of an
    earlier, larger build in DIR are removed so that the glob and the manifest agree."""
    names = []
    for n, start in enumerate(range(0, max(len(tokens), 1), MAX_SHARD_TOKENS)):
        names.append(write_shard(out / f"{split.name}_{n:06d}.bin", tokens[start:start + MAX_SHARD_TOKENS]).name)
    for stale in sorted(out.glob(f"{split.name}_[0-9][0-9][0-9][0-9][0-9][0-9].bin")):
        if stale.name not in names:
            stale.unlink()
    return names


def build_stdlib_corpus(out: str | os.PathLike, max_files: int | None = None, log=print) -> dict:
    """Write the python-stdlib corpus to `out` and return its manifest (also written as out/manifest.json).

    Tokens are the bytes of each file's UTF-8 source, in sorted relative-path order, each file followed by a NUL
    byte; files are split into train and val whole (SPLIT_RULE), so no file is in both. `max_files` keeps a prefix
    of the sorted list (for tests). The manifest's `sha256` is the SHA-256 of the token bytes stored in the shards
    (uint16 little-endian, headers excluded), train shards in order then val shards; each split also has its own.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"the standard library folder {root} (sysconfig) does not exist")
    files = stdlib_files(root)[:max_files]
    if not files:
        raise FileNotFoundError(f"no .py file found under {root}")
    splits = {"train": Split("train"), "val": Split("val")}
    skipped = []
    for i, relative in enumerate(files):
        source = read_source(root / relative)
        if source is None:
            skipped.append(relative.as_posix())
            continue
        splits["val" if i % VAL_EVERY == VAL_EVERY - 1 else "train"].add(relative.as_posix(), source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corpus_hash = hashlib.sha256()
    described = {}
    for split in splits.values():
        tokens = split.tokens()
        corpus_hash.update(tokens.tobytes())
        described[split.name] = {
            "files": len(split.files), "bytes": split.source_bytes, "tokens": len(tokens),
            "sha256": hashlib.sha256(tokens.tobytes()).hexdigest(), "shards": write_split(out, split, tokens),
            "paths": split.files,
        }
        shards = ", ".join(described[split.name]["shards"])
        log(f"{split.name}: {len(split.files)} files, {len(tokens):,} tokens -> {shards} in {out}")
    manifest = {
        "corpus": "python-stdlib",
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "stdlib": str(root),
        "skipped_folders": list(SKIPPED_FOLDERS),
        "skipped_files": skipped,
        "max_files": max_files,
        "tokenizer": "bytes: each byte of a file's UTF-8 source is one token",
        "vocab_size": 256,
        "separator": {"token": SEPARATOR, "rule": "after every file"},
        "split_rule": SPLIT_RULE,
        "format": {"name": "llm.c / modded-nanogpt token shard", "magic": SHARD_MAGIC, "version": SHARD_VERSION,
                   "header_bytes": HEADER_BYTES, "tokens": "uint16 little-endian",
                   "max_shard_tokens": MAX_SHARD_TOKENS},
        "sha256": corpus_hash.hexdigest(),
        "sha256_of": "the token bytes stored in the shards (uint16 little-endian, no headers): train, then val",
        **described,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


CORPORA = {"python-stdlib": build_stdlib_corpus}


# ---------------------------------------------------------------------------------------------- command line


class _OneLineParser(argparse.ArgumentParser):
    """Bad input is one line and exit code 2 (argparse's usage block would bury the reason)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m lai_bench.data.text",
                            description="Write a built-in text corpus as byte-level token shards and a manifest.")
    parser.add_argument("--corpus", required=True, help=f"one of: {', '.join(CORPORA)}")
    parser.add_argument("--out", required=True, type=Path, help="the folder for the shards and manifest.json")
    parser.add_argument("--max-files", type=_positive, default=None,
                        help="only the first N files of the sorted list (quick tests)")
    args = parser.parse_args(argv)
    if args.corpus not in CORPORA:
        parser.error(f"unknown corpus {args.corpus!r}; known: {', '.join(CORPORA)}")
    began = time.perf_counter()
    try:
        manifest = CORPORA[args.corpus](args.out, max_files=args.max_files)
    except OSError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.corpus} (Python {manifest['python_version']}): {manifest['train']['files']} train + "
          f"{manifest['val']['files']} val files, {manifest['train']['tokens']:,} + {manifest['val']['tokens']:,} "
          f"tokens, sha256 {manifest['sha256']}, in {args.out} ({time.perf_counter() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
