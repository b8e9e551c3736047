"""``/metrics`` with several processes per service: prometheus_client's multiprocess mode.

uvicorn runs a service as several worker processes, and a scrape reaches one of them. So
every process of a service (its uvicorn workers and, under ``snapshoe up``, its
``snapshoe worker`` process) writes its samples to memory-mapped files in one directory, the
service's ``PROMETHEUS_MULTIPROC_DIR``, and ``/metrics`` answers the sum over all of them
(:class:`prometheus_client.multiprocess.MultiProcessCollector`). The directory must be set
before a process imports prometheus_client and emptied before the first process starts:
``snapshoe up`` does it for each service and its worker (:func:`multiprocess_env`),
``snapshoe serve`` alone for its uvicorn workers (:func:`prepare_serve`). With one process and
no directory, the default registry is served as before.

A gauge says how processes combine (``multiprocess_mode``): ``mostrecent`` for a figure read
from the broker or a database (every process reads the same), ``livesum`` for what each
process holds (open streams), ``max`` for a lag. ``PROMETHEUS_MULTIPROC_DIR`` is
prometheus_client's own variable, read here and by the library, not a SNAPSHOE_ setting.

A worker in its own container (compose, Kubernetes) shares no directory with its service: it
serves its own ``/metrics`` on ``SNAPSHOE_WORKER_METRICS_PORT`` (:func:`serve_worker_metrics`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from snapshoe.kernel.settings import Settings

log = logging.getLogger("snapshoe.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def registry() -> CollectorRegistry | None:
    """A registry summing every process's files in multiprocess mode; None: the default."""
    path = multiprocess_dir()
    if path is None:
        return None
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=path)  # type: ignore[no-untyped-call]
    return reg


def render() -> bytes:
    reg = registry()
    return generate_latest(reg) if reg is not None else generate_latest()


def service_dir(settings: Settings, service: str) -> Path:
    """Where a service's processes write their samples: ``SNAPSHOE_METRICS_DIR`` (or a
    directory in the system's temp dir), per namespace and service."""
    base = Path(settings.metrics_dir) if settings.metrics_dir else Path(tempfile.gettempdir())
    return base / f"snapshoe-metrics-{settings.namespace}" / service


def fresh_dir(path: Path) -> Path:
    """Empty ``path`` (the files of processes that no longer run would be summed in)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def multiprocess_env(settings: Settings, service: str) -> dict[str, str]:
    """For ``snapshoe up``: the environment of a service's processes (its uvicorn workers and
    its ``snapshoe worker``), with their directory emptied now, before any of them starts."""
    return {MULTIPROC_ENV: str(fresh_dir(service_dir(settings, service)))}


def prepare_serve(settings: Settings, service: str, processes: int) -> None:
    """For ``snapshoe serve`` with several processes and no directory given (``up`` gives
    one): an emptied directory of its own, in the environment the uvicorn workers inherit."""
    if processes > 1 and multiprocess_dir() is None:
        os.environ[MULTIPROC_ENV] = str(fresh_dir(service_dir(settings, service)))


def serve_worker_metrics(settings: Settings, port: int | None = None) -> None:
    """A worker's own ``/metrics`` endpoint (a thread), on ``port`` or
    ``SNAPSHOE_WORKER_METRICS_PORT``; nothing when neither is set."""
    port = port or settings.worker_metrics_port
    if not port:
        return
    reg = registry()
    if reg is None:
        start_http_server(port, addr=settings.host)
    else:
        start_http_server(port, addr=settings.host, registry=reg)
    log.info("worker metrics on %s:%d/metrics", settings.host, port)
