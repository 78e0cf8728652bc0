"""The report's toolkit, below the tasks: records aggregated over seeds (aggregate), every statistic (stats), a row
against its baseline (compare, comparisons), names and formats (display), tables (tables, render), figures (canvas,
figures), run status (status), published numbers (paper) and the default per-task table (other_tasks). A task's
report hook builds its tables from these; `lai_bench.report` assembles every task's."""
