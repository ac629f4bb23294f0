"""What the bench commands share, so that each command's module holds only its own measurement.

data.py: the TREC DL data and `--data`; stand_ins.py: stand-in models (one cache path, built once)
and the settings serving a `--model`; servers.py: sidecars and the one-lock baseline (onelock.py) as
subprocesses; traffic.py: load workloads and their clients; timing.py: in-process speed of several
configurations; results.py: every command's JSON results; output.py: the console and writing JSON;
plot.py: the sweep's PNG.
"""
