"""Every example in docs/clients/python.md runs, against the real Writ.

A Python block runs as a script with the environment an agent would have
(``WRIT_ENDPOINT``, ``WRIT_TOKEN_FILE``, ``WRIT_TASK_ID``, and
``WORKFLOW_TOKEN`` for the workflow engine's example). An HTML comment
right before a block can ask for more::

    <!-- doc-test: task=prod approve expect="text the output must contain" -->

``task=prod`` opens the task in environment ``prod``; ``approve`` has both
approvers approve whatever request the block makes. Afterwards no lease
of the task may still be active: every example gives back what it takes.
A shell block must be a command some test runs (listed below).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import REPO, WritDev

from writ_client.proto import writ_pb2

DOC = REPO / "docs" / "clients" / "python.md"

#: Shell commands the guide shows, and what runs each.
SHELL_COMMANDS = {
    # tests/python_client.rs runs it before installing the test extra.
    "pip install ./clients/python": "tests/python_client.rs",
    # test_example.py runs it (COMMAND there).
    "python examples/python-agent/demo.py": "clients/python/tests/test_example.py",
    # test_the_generate_script_checks_for_drift below.
    "python clients/python/scripts/generate.py --check": "test_docs.py",
}


@dataclass
class Example:
    language: str
    code: str
    line: int
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{DOC.name}:{self.line}"


def examples() -> list[Example]:
    found: list[Example] = []
    lines = DOC.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[index])
        if fence is None:
            index += 1
            continue
        options: dict[str, str] = {}
        directive = re.match(r"^<!-- doc-test: (.*) -->$", lines[index - 1]) if index else None
        if directive:
            for word in shlex.split(directive.group(1)):
                key, _, value = word.partition("=")
                options[key] = value
        end = index + 1
        while not lines[end].startswith("```"):
            end += 1
        found.append(Example(fence.group(1), "\n".join(lines[index + 1 : end]) + "\n", index + 1, options))
        index = end + 1
    return found


PYTHON = [example for example in examples() if example.language == "python"]


def test_the_guide_has_examples() -> None:
    assert len(PYTHON) >= 8
    assert all(example.language in ("python", "sh") for example in examples()), "only python and sh blocks"


def test_every_shell_command_is_one_a_test_runs() -> None:
    for example in examples():
        if example.language == "sh":
            for command in example.code.strip().splitlines():
                assert command in SHELL_COMMANDS, f"{example}: `{command}` is run by no test"


def test_the_example_command_is_the_one_test_example_runs() -> None:
    from test_example import COMMAND

    assert COMMAND in SHELL_COMMANDS


def test_the_generate_script_checks_for_drift() -> None:
    result = subprocess.run(
        [sys.executable, "clients/python/scripts/generate.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("example", PYTHON, ids=str)
def test_python_example(example: Example, writ_server: WritDev, tmp_path: Path) -> None:
    environment = example.options.get("task", "dev")
    task_id = writ_server.open_task(environment)
    token_file = tmp_path / "agent-token"
    token_file.write_text(writ_server.token("agent"))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("WRIT_TOKEN", "WRIT_TOKEN_FILE", "WRIT_ENDPOINT", "WRIT_TASK_ID")
    }
    env.update(
        WRIT_ENDPOINT=writ_server.endpoint,
        WRIT_TOKEN_FILE=str(token_file),
        WRIT_TASK_ID=task_id,
        WORKFLOW_TOKEN=writ_server.token("workflow"),
    )
    script = tmp_path / "example.py"
    script.write_text(example.code, encoding="utf-8")
    stop = threading.Event()
    approver = None
    if "approve" in example.options:
        approver = threading.Thread(target=approve_everything, args=(writ_server, task_id, stop), daemon=True)
        approver.start()
    try:
        result = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=90, cwd=tmp_path
        )
    finally:
        stop.set()
        if approver is not None:
            approver.join(10)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{example} failed:\n{output}"
    if "expect" in example.options:
        assert example.options["expect"] in output, f"{example}: expected {example.options['expect']!r} in:\n{output}"
    active = [lease.lease_id for lease in writ_server.leases(task_id) if lease.state == writ_pb2.LEASE_STATE_ACTIVE]
    assert not active, f"{example} left leases active: {active}"
    writ_server.close_task(task_id)


def approve_everything(writ_server: WritDev, task_id: str, stop: threading.Event) -> None:
    decided: set[str] = set()
    while not stop.wait(0.2):
        for approval in writ_server.pending_approvals(task_id):
            if approval.approval_id not in decided:
                decided.add(approval.approval_id)
                writ_server.decide(approval.approval_id, "approver", reason="checked by the docs test")
                writ_server.decide(approval.approval_id, "approver-2", reason="agreed")
