"""A run's configuration: the schema (`RunConfig`, each field with its help text), recipes as data, resolution of a
run's defaults and its stable id. It names no task, backbone or data set: those are checked against their registries
by `lai_bench.validate`, a layer above the tasks."""
