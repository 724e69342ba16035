"""Step-up approvals (README tour step 9): refunds in prod wait for two approvers."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from harness import WritDev

import writ_client as writ

REFUND = "tokens/orders-admin:orders:refund"


def test_the_lease_waits_for_two_approvers_then_is_collected(
    writ_server: WritDev, client: writ.Client, prod_task: str
) -> None:
    asked: list[writ.Approval] = []
    voters: list[threading.Thread] = []

    def on_approval_required(approval: writ.Approval) -> None:
        asked.append(approval)
        voters.append(writ_server.approve_in_background(approval.approval_id))

    started = time.monotonic()
    with client.lease(
        prod_task, "orders.refund", REFUND, approval_timeout=30, on_approval_required=on_approval_required
    ) as lease:
        waited = time.monotonic() - started
        assert lease.role == "orders-admin" and lease.scopes == ("orders:refund",)
        assert writ_server.introspect(lease.token)["scope"] == "orders:refund"
    assert not writ_server.active(lease.token)
    (approval,) = asked
    assert approval.state == "pending" and approval.group == "orders-approvers" and approval.quorum == 2
    assert approval.tool == "orders.refund" and approval.grants == (writ.Grant.parse(REFUND),)
    assert approval.policies == ("prod-refunds-need-approval",)
    assert waited >= 0.6, "the lease came only after both votes"
    voters[0].join(5)


def test_waiting_gives_up_after_the_timeout(writ_server: WritDev, client: writ.Client, prod_task: str) -> None:
    started = time.monotonic()
    with pytest.raises(writ.ApprovalTimeout) as raised:
        with client.lease(prod_task, "orders.refund", REFUND, approval_timeout=1.5):
            pytest.fail("nothing may be issued")
    assert 1.4 <= time.monotonic() - started < 10
    pending = raised.value.approval
    assert pending.state == "pending" and pending.approvals == 0
    assert "0 of 2 approvals" in str(raised.value) and isinstance(raised.value, TimeoutError)
    # The request is still open at Writ: approve it, wait again, collect.
    writ_server.approve_in_background(pending.approval_id, delay=0).join(10)
    approved = client.wait_for_approval(pending.approval_id, timeout=10)
    assert approved.state == "approved" and approved.approvals == 2
    (lease,) = client.collect(pending.approval_id)
    assert writ_server.active(lease.token)
    client.release(lease)
    with pytest.raises(writ.ApprovalEnded, match="collected already"):
        client.collect(pending.approval_id)


def test_a_denial_raises_approval_denied_with_who_and_why(
    writ_server: WritDev, client: writ.Client, prod_task: str
) -> None:
    def deny(approval: writ.Approval) -> None:
        threading.Timer(
            0.3,
            writ_server.decide,
            args=(approval.approval_id, "approver-2"),
            kwargs={"approve": False, "reason": "no refund without a customer call"},
        ).start()

    with pytest.raises(writ.ApprovalDenied) as raised:
        with client.lease(prod_task, "orders.refund", REFUND, approval_timeout=30, on_approval_required=deny):
            pytest.fail("nothing may be issued")
    # Writ's own words, from the refused collection.
    assert 'was denied by "demo-approver-2": "no refund without a customer call"' in str(raised.value)
    assert isinstance(raised.value, writ.Denied) and raised.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.approval is not None and raised.value.approval.state == "denied"


def test_not_waiting_raises_approval_required(writ_server: WritDev, client: writ.Client, prod_task: str) -> None:
    with pytest.raises(writ.ApprovalRequired) as raised:
        client.issue(prod_task, "orders.refund", REFUND, wait_for_approval=False)
    approval = raised.value.approval
    assert "nothing was issued yet" in str(raised.value)
    with pytest.raises(writ.PreconditionFailed, match="still pending: 0 of 2 approvals"):
        client.collect(approval.approval_id)
    # Asking again while it waits answers the same request.
    with pytest.raises(writ.ApprovalRequired) as again:
        client.issue(prod_task, "orders.refund", REFUND, wait_for_approval=False)
    assert again.value.approval.approval_id == approval.approval_id


def test_closing_the_task_cancels_the_wait(writ_server: WritDev, client: writ.Client) -> None:
    task = writ_server.open_task("prod")

    def close(approval: writ.Approval) -> None:
        threading.Timer(0.3, writ_server.close_task, args=(task,)).start()

    with pytest.raises(writ.ApprovalEnded, match="cancelled") as raised:
        client.issue(task, "orders.refund", REFUND, approval_timeout=30, on_approval_required=close)
    assert raised.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert isinstance(raised.value, writ.PreconditionFailed)
