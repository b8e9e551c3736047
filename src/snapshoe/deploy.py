"""Container start-up helpers that need no database: create missing development secrets.

    python -m snapshoe.deploy secrets --dir /var/lib/snapshoe/secrets

Creates, only where absent, the ES256 key pair (at SNAPSHOE_JWT_*_KEY_FILE, else in
``--dir``) and random ``internal-token`` and ``pg-secret-key`` files in ``--dir``. A configured
key path outside ``--dir`` that does not exist is an error, not something to invent: it means an
operator meant to supply that secret and it is missing. Files already there are never touched,
so real secrets mounted by the operator win, and a restart keeps the keys that signed the live
tokens.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from snapshoe.kernel.auth import ensure_dev_keys
from snapshoe.kernel.settings import Settings

TOKEN_FILES: dict[str, str] = {
    "internal-token": "",
    # The sandbox PG takes any key; the test_sk_ prefix marks it as a test key, as Toss does.
    "pg-secret-key": "test_sk_",
}


class MissingSecretError(RuntimeError):
    """A secret file the configuration points at, outside the generated directory, is absent."""


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


def ensure_secrets(settings: Settings, directory: Path) -> list[str]:
    """Create the missing development secrets; return the names of the files created."""
    directory.mkdir(parents=True, exist_ok=True)
    created: list[str] = []
    # Configured key paths win; unset ones default to the directory (not the dev data dir).
    keys = (
        settings.jwt_private_key_file or directory / "jwt-private.pem",
        settings.jwt_public_key_file or directory / "jwt-public.pem",
    )
    present = [p.exists() for p in keys]
    if not all(present):
        outside = [str(p) for p in keys if not _inside(p, directory)]
        if any(present) or outside:
            missing = ", ".join(str(p) for p, ok in zip(keys, present, strict=True) if not ok)
            raise MissingSecretError(f"JWT key file(s) configured but missing: {missing}")
        pinned = {"jwt_private_key_file": keys[0], "jwt_public_key_file": keys[1]}
        ensure_dev_keys(Settings(**{**settings.model_dump(), **pinned}))
        created += [p.name for p in keys]
    for name, prefix in TOKEN_FILES.items():
        path = directory / name
        if not path.exists():
            _write_private(path, prefix + secrets.token_urlsafe(32))
            created.append(name)
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snapshoe.deploy")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("secrets", help="create missing development secrets")
    cmd.add_argument("--dir", type=Path, required=True, help="where generated secrets go")
    args = parser.parse_args(argv)
    try:
        created = ensure_secrets(Settings(), args.dir)
    except MissingSecretError as exc:
        print(f"secrets: {exc}", file=sys.stderr)
        return 1
    print(f"secrets: created {', '.join(created)}" if created else "secrets: all present")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
