"""``python -m lai_bench.report``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
