"""The chaos suite: a reproducible fault matrix against a real, private Lepton stack.

    python -m bench.chaos [--short] [--seed 17] [--runs 3] [--faults 'SIGKILL*'] [--keep]

For each fault (SIGKILL and SIGTERM of each service mid-work, a trainer paused past the
dead threshold, every heartbeat stopping, garbage on every input topic, the hostile-file
battery, the broker and PostgreSQL down for a while, a mixed load), a run streams small
ingests and training jobs, injects the fault at a point drawn from ``--seed``, and
measures: work submitted and completed, lost (no terminal outcome within a bounded time),
duplicated effects, time to recover (every /healthz 200 and a probe answered) and each
service's peak RSS. Prints a table and writes ``bench/results/chaos.json``. The targets
(0 lost, 0 duplicated, recovered within 30 s, no service crashed, the fault's own) are
checked per run; ``tests/chaos`` asserts them on the short form.
"""
