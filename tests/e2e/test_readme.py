"""The README's curl walk-through, run as written against the test platform (issue 12, item 17).

The block between the ``walk-through`` markers is extracted from README.md and run by bash
with ``set -euo pipefail``, its ``GW``/``MAIL``/``EMAIL`` pointed at this run's gateway, mail
sink and a fresh address: what a new user pastes is what is tested.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess

import pytest
from tests.support.platform import ROOT, Platform

START, END = "<!-- walk-through:start -->", "<!-- walk-through:end -->"


def walk_through() -> str:
    readme = (ROOT / "README.md").read_text()
    assert START in readme, "README.md lost its walk-through markers"
    block = readme[readme.index(START) + len(START) : readme.index(END)]
    m = re.fullmatch(r"\s*```sh\n(.*?)```\s*", block, re.S)
    assert m, "the walk-through is one ```sh block between the markers"
    return m.group(1)


def test_the_walk_through_uses_overridable_variables_with_dev_defaults() -> None:
    script = walk_through()
    assert "GW=${GW:-http://127.0.0.1:8000}" in script
    assert "MAIL=${MAIL:-http://127.0.0.1:8025}" in script
    assert "EMAIL=${EMAIL:-ada@example.com}" in script
    assert "grep -o" not in script  # picked digits out of ids and dates


async def test_the_readme_walk_through_verifies_and_logs_in(platform: Platform) -> None:
    if not shutil.which("curl"):
        pytest.fail("curl is required: the walk-through uses it")
    email = f"ada-{secrets.token_hex(5)}@example.com"
    env = {
        **os.environ,
        "GW": platform.gateway,
        "MAIL": platform.url("mail_sink"),
        "EMAIL": email,
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", walk_through()],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 4, proc.stdout
    signup, code_line, verified, me = lines
    assert json.loads(signup)["status"] == "accepted", signup
    # The code the script picked is the one mailed (and no digits from an id or a date).
    code = re.fullmatch(r"code: (\d{6})", code_line)
    assert code, code_line
    assert code.group(1) == await platform.read_code(email)
    assert json.loads(verified) == {"email_verified": True}, verified
    profile = json.loads(me)
    assert profile["email"] == email
    assert profile["email_verified"] is True
