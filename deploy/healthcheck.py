"""Docker HEALTHCHECK for every container of the SnapShoe image (stdlib only: it runs every
few seconds in each container, so it must start fast and import nothing of the app).

It finds what the container runs from the process table:

- ``snapshoe serve SERVICE``: healthy when ``GET /healthz`` on that service's port answers 200;
- ``snapshoe worker SERVICE``: healthy while the worker process lives (workers have no HTTP
  endpoint; an exited worker stops the container, and the restart policy brings it back);
- anything else (the one-shot setup and migrate containers): healthy.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

# The defaults of snapshoe.kernel.settings.Settings (a unit test keeps the two equal).
DEFAULT_PORTS: dict[str, int] = {
    "users": 8101,
    "products": 8102,
    "orders": 8103,
    "payments": 8104,
    "sandbox_pg": 8105,
    "mail_sink": 8025,
    "web": 8107,
}


def port_of(service: str, env: dict[str, str]) -> int:
    name = "MAIL_SINK_HTTP" if service == "mail_sink" else service.upper()
    return int(env.get(f"SNAPSHOE_{name}_PORT", DEFAULT_PORTS[service]))


def role_of(argv: list[str]) -> tuple[str, str] | None:
    """``("serve", "orders")`` for ``.../python .../snapshoe serve orders``, else None."""
    for i, arg in enumerate(argv):
        if Path(arg).name == "snapshoe" or arg == "snapshoe.cli":
            rest = [a for a in argv[i + 1 :] if not a.startswith("-")]
            if len(rest) >= 2 and rest[0] in ("serve", "worker"):
                return rest[0], rest[1]
    return None


def find_role(proc: Path = Path("/proc")) -> tuple[str, str] | None:
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        role = role_of([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if role is not None:
            return role
    return None


def main() -> int:
    role = find_role()
    if role is None or role[0] == "worker":
        return 0
    service = role[1]
    if service not in DEFAULT_PORTS:
        return 1
    url = f"http://127.0.0.1:{port_of(service, dict(os.environ))}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
