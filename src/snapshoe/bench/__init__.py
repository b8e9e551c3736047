"""Benchmarks of the running platform (``snapshoe bench ...``).

Not a service: it talks to the platform over HTTP (through the gateway, as buyers do) and
reads the service databases with SQL for its checks. It imports no service package.
"""
