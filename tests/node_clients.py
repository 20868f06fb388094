"""Running the Node clients of ``tests/clients`` (graphql-http's audit, graphql-ws) from tests.

``scripts/ci-setup-node-clients.sh`` installs them (``make test`` runs it); without them the
tests that need them fail with the command to run, rather than being skipped.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

CLIENTS = Path(__file__).parent / "clients"
TIMEOUT = 120.0


def _node() -> str:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH (the Node clients need Node 20+)"
    assert (CLIENTS / "node_modules").is_dir(), (
        "the Node test clients are not installed: run scripts/ci-setup-node-clients.sh"
    )
    return node


async def run_script(script: str, *args: str) -> list[dict[str, Any]]:
    """Run ``tests/clients/<script>`` and return the JSON lines it printed; a script that
    exits non-zero fails the test with its output."""
    process = await asyncio.create_subprocess_exec(
        _node(),
        str(CLIENTS / script),
        *args,
        cwd=CLIENTS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = stdout.decode()
    assert process.returncode == 0, (
        f"{script} exited {process.returncode}:\n{text}\n{stderr.decode()}"
    )
    return [json.loads(line) for line in text.splitlines() if line.strip()]
