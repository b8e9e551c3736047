"""Render the gateway config without the CLI (containers: an init step before HAProxy starts).

    python -m snapshoe.gateway render --target compose --out /var/lib/snapshoe/gateway/haproxy.cfg

The public key is copied next to the config and the config points at that copy, so the official
HAProxy image only needs the one shared directory (mounted at the same path) and never sees the
private key.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import cast

from snapshoe.gateway.render import Target, check_config, render_config
from snapshoe.kernel.settings import Settings

PUBLIC_KEY_NAME = "jwt-public.pem"


def render_to(
    settings: Settings, target: Target, out: Path, *, k8s_namespace: str = "snapshoe"
) -> Path:
    """Copy the public key beside ``out`` and write the config for ``target`` there, atomically.

    Returns the path of the key copy.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    key_copy = out.parent / PUBLIC_KEY_NAME
    tmp_key = key_copy.with_suffix(".pem.tmp")
    shutil.copyfile(settings.public_key_path, tmp_key)
    tmp_key.chmod(0o644)  # HAProxy runs as another user (uid 99 in the official image)
    tmp_key.replace(key_copy)
    pinned = Settings(**{**settings.model_dump(), "jwt_public_key_file": key_copy})
    text = render_config(pinned, target, k8s_namespace=k8s_namespace)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(out)
    return key_copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snapshoe.gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write haproxy.cfg and the public key it verifies with")
    render.add_argument("--target", choices=("local", "compose", "k8s"), default="local")
    render.add_argument("--out", type=Path, required=True, help="path of haproxy.cfg to write")
    render.add_argument("--k8s-namespace", default="snapshoe", help="namespace of the services")
    render.add_argument("--check", action="store_true", help="run haproxy -c on the result")
    args = parser.parse_args(argv)

    settings = Settings()
    if not settings.public_key_path.exists():
        print(f"no public key at {settings.public_key_path}", file=sys.stderr)
        return 1
    out: Path = args.out
    render_to(settings, cast(Target, args.target), out, k8s_namespace=args.k8s_namespace)
    if args.check:
        check_config(out)
    print(f"rendered the {args.target} gateway config to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
