"""lai_bench.data.text and .shards: llm.c / modded-nanogpt token shards the tests write, deterministic token windows
over them, and the built-in python-stdlib corpus (CPU, a few seconds)."""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lai_bench.data.shards import HEADER_BYTES, SHARD_MAGIC, ShardError, check_shard
from lai_bench.data.text import TokenWindows, find_shards, main, read_shard, write_shard


def header_ints(path):
    return np.fromfile(path, dtype="<i4", count=256)


@pytest.fixture
def counting_shards(tmp_path):
    """Three shards whose concatenation is 0, 1, 2, ..., 336: a window's tokens are its stream positions."""
    lengths, start, paths = (100, 37, 200), 0, []
    for n, length in enumerate(lengths):
        paths.append(write_shard(tmp_path / f"count_train_{n:06d}.bin", np.arange(start, start + length)))
        start += length
    return paths


# ---------------------------------------------------------------------------------------------- the shard format


def test_a_written_shard_reads_back_with_the_llmc_header(tmp_path):
    tokens = [0, 1, 50256, 65535, 7]
    path = write_shard(tmp_path / "a_val_000000.bin", tokens)
    assert path.stat().st_size == HEADER_BYTES + 2 * len(tokens)
    assert header_ints(path)[:3].tolist() == [20240520, 1, 5] and not header_ints(path)[3:].any()
    assert path.read_bytes()[HEADER_BYTES:HEADER_BYTES + 4] == bytes([0, 0, 1, 0])  # little-endian uint16
    read = read_shard(path)
    assert isinstance(read, np.memmap) and read.dtype == np.uint16 and read.tolist() == tokens
    # Rewriting goes through a temporary file that is renamed: nothing else is left in the folder.
    write_shard(path, np.array([3, 2], dtype=np.int64))
    assert read_shard(path).tolist() == [3, 2] and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert read_shard(write_shard(tmp_path / "empty.bin", [])).tolist() == []


@pytest.mark.parametrize("tokens, says", [
    ([1, 2, -1], "token -1 at position 2"), ([1, 2, 65536], "token 65536 at position 2"),
    ([1, 2, 2.5], "token 2.5 at position 2"), ([1, 2, "x"], "token 'x' at position 2"),
    (np.array([1, 70000]), "token 70000 at position 1"), (np.array([1.0, 2.0]), "token 1.0 at position 0"),
])
def test_a_token_outside_uint16_is_refused_by_value(tmp_path, tokens, says):
    with pytest.raises(ValueError) as e:
        write_shard(tmp_path / "bad.bin", tokens)
    assert says in str(e.value) and "[0, 65535]" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def corrupt(path, case):
    """The shard at `path`, broken in one field."""
    data = bytearray(path.read_bytes())
    if case == "short":
        return path.write_bytes(data[:100])
    field = {"magic": 0, "version": 1, "count": 2}[case]
    value = {"magic": 20240801, "version": 7, "count": 9}[case]
    data[4 * field:4 * field + 4] = np.array([value], dtype="<i4").tobytes()
    path.write_bytes(data)


@pytest.mark.parametrize("case, says", [
    ("short", ["header", "100 bytes", "1024-byte header"]),
    ("magic", ["magic", "found 20240801", f"expected {SHARD_MAGIC}"]),
    ("version", ["version", "found 7", "expected 1"]),
    ("count", ["token count", "9 tokens", "1042 bytes", "1032 bytes", "4 tokens"]),
])
def test_each_broken_shard_is_one_line_naming_the_file_and_field(tmp_path, case, says):
    path = write_shard(tmp_path / "broken_train_000000.bin", [1, 2, 3, 4])
    corrupt(path, case)
    for reader in (check_shard, read_shard, lambda p: TokenWindows([p], 1)):
        with pytest.raises(ShardError) as e:
            reader(path)
        message = str(e.value)
        assert isinstance(e.value, ValueError) and "\n" not in message
        assert message.startswith(f"{path}: ") and all(s in message for s in says), message


def test_find_shards_sorts_and_names_a_pattern_that_matches_nothing(tmp_path, counting_shards):
    assert find_shards(tmp_path / "count_train_*.bin") == counting_shards
    pattern = str(tmp_path / "fineweb_train_*.bin")
    with pytest.raises(FileNotFoundError, match="fineweb_train_"):
        find_shards(pattern)


# ---------------------------------------------------------------------------------------------- token windows


def test_train_windows_depend_only_on_seed_step_and_rank(tmp_path, counting_shards):
    windows = TokenWindows(tmp_path / "count_train_*.bin", seq_len=16)
    assert windows.num_tokens == 337
    x, y = windows.train_batch(step=5, batch=8, seed=1)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    # Tokens are positions, so each window is a run across the three shards and y is x moved on by one.
    assert torch.equal(x, x[:, :1] + torch.arange(16)) and torch.equal(y, x + 1) and y.max() <= 336
    # Resuming: a fresh object, after drawing other steps, draws the same batch at step 5.
    resumed = TokenWindows(counting_shards, seq_len=16)
    resumed.train_batch(step=4, batch=8, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(resumed.train_batch(step=5, batch=8, seed=1), (x, y)))
    for other in (dict(step=6, seed=1), dict(step=5, seed=2), dict(step=5, seed=1, rank=1, world=2)):
        assert not torch.equal(windows.train_batch(batch=8, **other)[0], x), other
    with pytest.raises(ValueError, match="rank 2"):
        windows.train_batch(step=0, batch=1, seed=0, rank=2, world=2)


def test_train_windows_reach_every_start_and_cross_shard_boundaries(counting_shards):
    windows = TokenWindows(counting_shards, seq_len=16)
    starts = np.concatenate([windows.train_starts(step, 64, seed=0) for step in range(40)])
    assert starts.min() == 0 and starts.max() == 337 - 17  # the last full window of 17 tokens
    assert ((starts < 100) & (starts + 17 > 100)).any()  # some windows span the first boundary


def test_eval_windows_cover_exactly_the_budget_the_same_every_time(counting_shards):
    windows = TokenWindows(counting_shards, seq_len=16)
    first, second = list(windows.eval_batches(batch=3, tokens=160)), list(windows.eval_batches(batch=3, tokens=160))
    assert [x.shape[0] for x, _ in first] == [3, 3, 3, 1]  # 10 windows of 16
    assert all(torch.equal(a, b) for (xa, ya), (xb, yb) in zip(first, second) for a, b in ((xa, xb), (ya, yb)))
    x, y = (torch.cat(part) for part in zip(*first))
    assert torch.equal(x.flatten(), torch.arange(160)) and torch.equal(y.flatten(), torch.arange(1, 161))
    with pytest.raises(ValueError, match="multiple of seq_len 16"):
        next(windows.eval_batches(batch=3, tokens=100))
    assert len(list(windows.eval_batches(batch=3, tokens=336))) == 7  # 337 tokens: 336 inputs, 336 targets
    with pytest.raises(ValueError, match="needs 353 tokens, the shards hold 337"):
        next(windows.eval_batches(batch=3, tokens=352))


# ---------------------------------------------------------------------------------------------- python-stdlib corpus


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    """The corpus of the first 30 stdlib files, built twice into two folders."""
    folders = [tmp_path_factory.mktemp(f"stdlib{i}") for i in range(2)]
    for folder in folders:
        assert main(["--corpus", "python-stdlib", "--out", str(folder), "--max-files", "30"]) == 0
    return folders


def test_the_stdlib_corpus_is_the_same_twice(two_builds):
    first, second = two_builds
    names = sorted(p.name for p in first.iterdir())
    assert names == ["manifest.json", "train_000000.bin", "val_000000.bin"] == sorted(p.name for p in second.iterdir())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names if n.endswith(".bin"))
    a, b = (json.loads((f / "manifest.json").read_text()) for f in two_builds)
    assert a["sha256"] == b["sha256"] and a["train"] == b["train"]
    # The corpus hash is the hash of the stored token bytes, train then val, and can be checked from the shards.
    stored = [(first / f"{split}_000000.bin").read_bytes()[HEADER_BYTES:] for split in ("train", "val")]
    assert a["sha256"] == hashlib.sha256(b"".join(stored)).hexdigest()
    assert a["val"]["sha256"] == hashlib.sha256(stored[1]).hexdigest()


def test_the_stdlib_manifest_describes_byte_level_shards(two_builds):
    folder = two_builds[0]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"python_version", "stdlib", "split_rule", "format", "sha256", "sha256_of", "separator"} <= set(manifest)
    assert manifest["vocab_size"] == 256 and manifest["python_version"] == ".".join(map(str, sys.version_info[:3]))
    train, val = manifest["train"], manifest["val"]
    assert (train["files"], val["files"]) == (29, 1) and train["files"] + val["files"] + len(
        manifest["skipped_files"]) == 30
    assert set(train["paths"]).isdisjoint(val["paths"]) and train["paths"] == sorted(train["paths"])
    assert all(p.endswith(".py") and "/test/" not in f"/{p}" for p in train["paths"] + val["paths"])
    for split in (train, val):
        tokens = read_shard(folder / split["shards"][0])
        assert len(tokens) == split["tokens"] == split["bytes"] + split["files"]  # one separator per file
        assert tokens.max() < 256 and (tokens == 0).sum() == split["files"] and tokens[-1] == 0
    # The bytes are the files' source: the val file comes back whole.
    source = (manifest["stdlib"] + "/" + val["paths"][0])
    assert bytes(read_shard(folder / "val_000000.bin")[:-1].astype(np.uint8)) == open(source, "rb").read()


def test_the_corpus_command_prints_a_summary(tmp_path, capsys):
    assert main(["--corpus", "python-stdlib", "--out", str(tmp_path), "--max-files", "3"]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["sha256"] in out and str(tmp_path) in out and "3 train + 0 val files" in out


@pytest.mark.parametrize("args, says", [
    (["--corpus", "wikipedia"], "unknown corpus 'wikipedia'; known: python-stdlib"),
    (["--corpus", "python-stdlib", "--max-files", "0"], "--max-files: expected a positive integer, got '0'"),
])
def test_bad_corpus_arguments_are_one_line_and_exit_2(tmp_path, capsys, args, says):
    with pytest.raises(SystemExit) as e:
        main([*args, "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and list(tmp_path.iterdir()) == []


def test_the_module_runs_as_a_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lai_bench.data.text", "--corpus", "nope", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["python -m lai_bench.data.text: error: unknown corpus 'nope'; known: "
                                        "python-stdlib"]
