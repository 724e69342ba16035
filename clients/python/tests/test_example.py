"""The example agent (examples/python-agent): a PostgreSQL login for a task,
used, and gone once the workflow engine closes the task."""

from __future__ import annotations

import os
import subprocess
import sys

from harness import REPO, writ_binary

#: The command docs/clients/python.md and the example's README give.
COMMAND = "python examples/python-agent/demo.py"


def test_the_example_agent_reads_postgres_and_loses_its_login_when_the_task_closes() -> None:
    args = COMMAND.split()
    result = subprocess.run(
        [sys.executable, *args[1:]],
        cwd=REPO,
        env={**os.environ, "WRIT_BIN": writ_binary()},
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "agent: read 3 orders, 245 in total" in output
    assert "demo: workflow engine closed the task: 1 lease(s) revoked" in output
    assert "agent: the session was ended" in output
    assert 'agent: the login is gone: role "writ_' in output and "does not exist" in output
    assert "demo: ok: the credential lived exactly as long as the task" in output
