"""The launch side: grid files into runs (grid, controls), the plan and the executors (launcher), what a job runs
(jobs), which job ran which run (jobbook) and each run's one state (state)."""
