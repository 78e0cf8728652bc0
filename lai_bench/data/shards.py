"""Token shards in the llm.c / modded-nanogpt format: a header of 256 little-endian int32 ([0] magic 20240520,
[1] version 1, [2] the number of tokens), then the tokens as little-endian uint16. A shard of n tokens is therefore
exactly 1,024 + 2 n bytes, which is what `check_shard` holds every file to before a token is read.

The format is the one FineWeb shards for nanoGPT-style speedruns come in, so the same reader serves a downloaded
FineWeb10B and the built-in corpus of lai_bench.data.text.
"""
import glob
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_TOKEN = 2**16 - 1  # uint16
# llm.c's LLaMA-3 shards share the layout but store uint32 tokens: named in the error so nobody guesses.
_LLAMA3_MAGIC = 20240801


class ShardError(ValueError):
    """A file that is not a well-formed token shard; the message is one line naming the file and the field."""


def shard_header(num_tokens: int) -> np.ndarray:
    """The 256 int32 of a header for `num_tokens` tokens (little-endian, as llm.c writes it)."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, num_tokens)
    return header


def as_tokens(tokens: Sequence[int] | np.ndarray) -> np.ndarray:
    """`tokens` as little-endian uint16; ValueError naming the first value that is not an integer in [0, 65535]
    (checked before any conversion, so a 70000 is refused rather than silently wrapped)."""
    if not isinstance(tokens, np.ndarray):  # a list: check the values as given, before numpy turns 1 into 1.0
        bad = next(((i, t) for i, t in enumerate(tokens) if not _is_token(t)), None)
        if bad is not None:
            raise ValueError(f"token {bad[1]!r} at position {bad[0]} is not an integer in [0, {MAX_TOKEN}]")
        tokens = np.array(tokens, dtype=np.int64)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one-dimensional, got shape {tokens.shape}")
    if tokens.size and tokens.dtype.kind not in "iu":
        raise ValueError(f"token {tokens[0].item()!r} at position 0 is not an integer in [0, {MAX_TOKEN}] "
                         f"(an array of {tokens.dtype})")
    out_of_range = np.flatnonzero((tokens < 0) | (tokens > MAX_TOKEN))
    if out_of_range.size:
        i = int(out_of_range[0])
        raise ValueError(f"token {int(tokens[i])} at position {i} is not an integer in [0, {MAX_TOKEN}] (uint16)")
    return tokens.astype("<u2")


def _is_token(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN


def write_shard(path: str | os.PathLike, tokens: Sequence[int] | np.ndarray) -> Path:
    """Write `tokens` as one shard at `path`. Atomic: the bytes go to a temporary file in the same folder, which is
    renamed over `path` only when complete, so a reader never sees half a shard (and a crash leaves no shard)."""
    path = Path(path)
    data = as_tokens(tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # open() keeps the umask
    try:
        with open(tmp, "xb") as f:
            f.write(shard_header(len(data)).tobytes())
            f.write(data.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_shard(path: str | os.PathLike) -> int:
    """The number of tokens in the shard at `path`, after checking its header against the file's size.
    ShardError (one line: the file, the field, what was found and what was expected) otherwise."""
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: header: the file is {size} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, count = (int(v) for v in np.fromfile(path, dtype="<i4", count=3))
    if magic != SHARD_MAGIC:
        hint = " (llm.c's LLaMA-3 shards of uint32 tokens, not supported)" if magic == _LLAMA3_MAGIC else ""
        raise ShardError(f"{path}: magic: found {magic}, expected {SHARD_MAGIC}{hint}")
    if version != SHARD_VERSION:
        raise ShardError(f"{path}: version: found {version}, expected {SHARD_VERSION}")
    if count < 0 or size != HEADER_BYTES + 2 * count:
        in_file = (size - HEADER_BYTES) / 2
        raise ShardError(f"{path}: token count: the header says {count} tokens ({HEADER_BYTES + 2 * count} bytes) "
                         f"but the file is {size} bytes ({in_file:g} tokens)")
    return count


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """The tokens of the shard at `path` as a read-only uint16 memory map (nothing is loaded until used); the header
    is checked first."""
    count = check_shard(path)
    if count == 0:  # numpy cannot map zero bytes
        return np.zeros(0, dtype="<u2")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def find_shards(pattern: str | os.PathLike) -> list[Path]:
    """The files matching the glob `pattern` (e.g. "data/fineweb10B/fineweb_train_*.bin"), sorted by name, which
    is the shard order (`_%06d` numbering). FileNotFoundError naming the pattern when nothing matches."""
    paths = sorted(Path(p) for p in glob.glob(os.fspath(pattern)))
    if not paths:
        raise FileNotFoundError(f"no token shard matches {os.fspath(pattern)!r}")
    return paths
