"""python -m lai_bench.bench: every method side by side in one process (cli); its table, CSV and plots (output)."""
