"""Fixtures: one real Writ (``writ dev``) per test session, tasks, clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import WritDev, free_port, writ_binary

import writ_client as writ


@pytest.fixture(scope="session")
def writ_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WritDev]:
    server = WritDev(writ_binary(), tmp_path_factory.mktemp("writ") / "dev")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def task(writ_server: WritDev) -> Iterator[str]:
    """An open task of ``demo-agent`` in environment ``dev``, closed afterwards."""
    task_id = writ_server.open_task("dev")
    yield task_id
    writ_server.close_task(task_id)


@pytest.fixture
def prod_task(writ_server: WritDev) -> Iterator[str]:
    """A task in ``prod``, where refunds need two approvers."""
    task_id = writ_server.open_task("prod")
    yield task_id
    writ_server.close_task(task_id)


@pytest.fixture
def agent_token(writ_server: WritDev) -> str:
    return writ_server.token("agent")


@pytest.fixture
def client(writ_server: WritDev, agent_token: str) -> Iterator[writ.Client]:
    with writ.Client(writ_server.endpoint, token=agent_token) as client:
        yield client


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on."""
    return free_port()
