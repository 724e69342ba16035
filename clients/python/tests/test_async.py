"""The asyncio API, against the same real Writ."""

from __future__ import annotations

import asyncio
import time

import pytest
from harness import WritDev

import writ_client as writ
import writ_client.aio as aio

READ = "tokens/orders-read:orders:read@5m"
REFUND = "tokens/orders-admin:orders:refund"


async def test_a_lease_is_active_inside_the_block_and_revoked_after(
    writ_server: WritDev, agent_token: str, task: str
) -> None:
    async with aio.Client(writ_server.endpoint, token=agent_token) as client:
        async with client.lease(task, "orders.lookup", READ) as lease:
            assert lease.state == "active" and writ_server.introspect(lease.token)["writ_task"] == task
        assert lease.released
        assert not writ_server.active(lease.token)


async def test_an_exception_in_the_block_still_releases(writ_server: WritDev, agent_token: str, task: str) -> None:
    async with aio.Client(writ_server.endpoint, token=agent_token) as client:
        with pytest.raises(RuntimeError, match="tool failed"):
            async with client.lease(task, "orders.lookup", READ) as lease:
                assert writ_server.active(lease.token)
                raise RuntimeError("tool failed")
    assert lease.released and not writ_server.active(lease.token)


async def test_cancellation_still_releases(writ_server: WritDev, agent_token: str, task: str) -> None:
    holding = asyncio.Event()
    leases: list[writ.Lease] = []

    async def agent() -> None:
        async with aio.lease(task, "orders.lookup", READ, endpoint=writ_server.endpoint, token=agent_token) as lease:
            leases.append(lease)
            holding.set()
            await asyncio.sleep(60)

    running = asyncio.create_task(agent())
    await asyncio.wait_for(holding.wait(), 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert leases[0].released and not writ_server.active(leases[0].token)


async def test_a_short_lease_is_renewed_in_the_background(writ_server: WritDev, agent_token: str, task: str) -> None:
    async with aio.Client(writ_server.endpoint, token=agent_token, renew_at=0.5) as client:
        async with client.lease(task, "orders.lookup", "tokens/orders-read:orders:read@3s") as lease:
            first = lease.token
            await asyncio.sleep(4.5)
            assert lease.renewals >= 2
            assert writ_server.active(lease.token) and not writ_server.active(first)
        assert not writ_server.active(lease.token)


async def test_denied_and_unavailable(writ_server: WritDev, agent_token: str, task: str, closed_port: int) -> None:
    async with aio.Client(writ_server.endpoint, token=agent_token) as client:
        with pytest.raises(writ.Denied, match='no policy permits agent "demo-agent" to issue tokens/orders-admin'):
            async with client.lease(task, "orders.lookup", REFUND):
                pytest.fail("nothing may be issued")
        with pytest.raises(writ.NotFound):
            await client.issue("no-such-task", "orders.lookup", READ)
    async with aio.Client(f"http://127.0.0.1:{closed_port}", token=agent_token, timeout=5) as client:
        with pytest.raises(writ.Unavailable) as raised:
            await client.issue(task, "orders.lookup", READ)
        assert raised.value.retryable


async def test_an_async_token_source(writ_server: WritDev, agent_token: str, task: str) -> None:
    calls = 0

    async def token() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return agent_token

    async with aio.lease(task, "orders.lookup", READ, endpoint=writ_server.endpoint, token=token) as lease:
        assert writ_server.active(lease.token)
    assert calls == 2


async def test_approval_is_awaited_then_collected(writ_server: WritDev, agent_token: str, prod_task: str) -> None:
    asked: list[writ.Approval] = []

    async def on_approval_required(approval: writ.Approval) -> None:
        asked.append(approval)
        writ_server.approve_in_background(approval.approval_id)

    async with aio.Client(writ_server.endpoint, token=agent_token) as client:
        async with client.lease(
            prod_task, "orders.refund", REFUND, approval_timeout=30, on_approval_required=on_approval_required
        ) as lease:
            assert writ_server.introspect(lease.token)["scope"] == "orders:refund"
        assert not writ_server.active(lease.token)
    assert asked[0].quorum == 2


async def test_approval_timeout(writ_server: WritDev, agent_token: str, prod_task: str) -> None:
    async with aio.Client(writ_server.endpoint, token=agent_token) as client:
        started = time.monotonic()
        with pytest.raises(writ.ApprovalTimeout) as raised:
            await client.issue(prod_task, "orders.refund", REFUND, approval_timeout=1)
        assert 0.9 <= time.monotonic() - started < 10
        assert raised.value.approval.state == "pending"


async def test_a_workflow_engine_opens_and_closes_tasks(writ_server: WritDev, agent_token: str) -> None:
    async with aio.TaskClient(writ_server.endpoint, token=writ_server.token("workflow")) as tasks:
        task = await tasks.start(f"py-async-{time.monotonic_ns()}", "demo-agent", environment="dev", deadline_in=300)
        assert task.state == "open" and task.created_by == "demo-workflow"
        async with aio.Client(writ_server.endpoint, token=agent_token) as client:
            (lease,) = await client.issue(task.task_id, "orders.lookup", READ)
        closed = await tasks.close_task(task.task_id)
        assert closed.task is not None and closed.task.state == "closed" and closed.revoked + closed.retrying == 1
        assert not writ_server.active(lease.token)
        _, leases = await tasks.get(task.task_id)
        assert [each.lease_id for each in leases] == [lease.lease_id]
        with pytest.raises(writ.AlreadyExists):
            await tasks.start(task.task_id, "demo-agent", deadline_in=300)


async def test_a_denial_raises_approval_denied(writ_server: WritDev, agent_token: str, prod_task: str) -> None:
    async def deny(approval: writ.Approval) -> None:
        await asyncio.sleep(0.2)
        await asyncio.to_thread(writ_server.decide, approval.approval_id, "approver", False, "not today")

    async with aio.Client(writ_server.endpoint, token=agent_token) as client:
        with pytest.raises(writ.ApprovalDenied, match='was denied by "demo-approver-1": "not today"'):
            await client.issue(prod_task, "orders.refund", REFUND, approval_timeout=30, on_approval_required=deny)
