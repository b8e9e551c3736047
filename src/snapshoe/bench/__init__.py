"""Benchmarks of the running platform (``snapshoe bench ...``).

Not a service: it talks to the platform over HTTP (through the gateway, as buyers do) and
reads the service databases with SQL for its checks. It imports no service package.

- ``snapshoe bench drop [--compare]``: ``drop.py`` runs the phases of a drop; ``drop_model``
  (config, records, refusals), ``drop_setup`` (platform checks, buyers, the drop product),
  ``drop_stampede`` (wrk with ``drop.lua``, the floor with ``floor.lua``), ``drop_payments``
  (payments and re-buy rounds), ``drop_result`` (figures, failures, targets, summary);
  ``checks`` (SQL), ``probe`` (the gateway's connection cap), ``report`` (HTML), ``wrk``.
- ``python -m snapshoe.bench.reserve``: the products reserve endpoint alone (``reserve.lua``).

Results and how to reproduce them: ``bench/RESULTS.md``; runs write to ``bench/out/``.
"""
