"""One run: its lifecycle (lifecycle: `Run` and the `python -m lai_bench.train` command line), rank 0's decision
for all ranks (claim) and the run's lock (runlock)."""
