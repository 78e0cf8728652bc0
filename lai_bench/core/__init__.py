"""The base layer: devices, errors, atomic files, normalisation constants, plug-ins, shipped resources and the
generic registry. Imports nothing else of lai_bench."""
