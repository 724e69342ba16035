"""`with client.lease(...)` against a real Writ: issue, renew, release, errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import WritDev, eventually

import writ_client as writ

READ = "tokens/orders-read:orders:read@5m"


def test_a_lease_is_active_inside_the_block_and_revoked_after(
    writ_server: WritDev, client: writ.Client, task: str
) -> None:
    with client.lease(task, "orders.lookup", READ) as lease:
        assert lease.task_id == task and lease.provider == "tokens" and lease.role == "orders-read"
        assert lease.scopes == ("orders:read",) and lease.state == "active"
        assert isinstance(lease.credential, writ.BearerToken)
        claims = writ_server.introspect(lease.token)
        assert claims["active"] is True
        assert claims["writ_task"] == task and claims["scope"] == "orders:read" and claims["aud"] == "orders-api"
        token = lease.token
    assert lease.released and lease.state in ("revoking", "revoked")
    assert writ_server.introspect(token) == {"active": False}
    states = {each.lease_id: each.state for each in writ_server.leases(task)}
    assert states[lease.lease_id] in (writ.proto.writ_pb2.LEASE_STATE_REVOKING, writ.proto.writ_pb2.LEASE_STATE_REVOKED)


def test_an_exception_in_the_block_still_releases(writ_server: WritDev, client: writ.Client, task: str) -> None:
    class ToolFailed(Exception):
        pass

    with pytest.raises(ToolFailed):
        with client.lease(task, "orders.lookup", READ) as lease:
            token = lease.token
            assert writ_server.active(token)
            raise ToolFailed("the tool call blew up")
    assert lease.released
    assert not writ_server.active(token)


def test_a_short_lease_is_renewed_in_the_background(writ_server: WritDev, agent_token: str, task: str) -> None:
    # 3 s leases renewed after half their lifetime: by 4.5 s the first
    # token (signed for 3 s) is dead, yet the lease holds a live one.
    with writ.Client(writ_server.endpoint, token=agent_token, renew_at=0.5) as client:
        with client.lease(task, "orders.lookup", "tokens/orders-read:orders:read@3s") as lease:
            first_token, first_expiry = lease.token, lease.expires_at
            assert first_expiry is not None
            time.sleep(4.5)
            assert lease.renewals >= 2, f"renewed {lease.renewals} times"
            assert lease.expires_at is not None and lease.expires_at > first_expiry
            assert lease.token != first_token, "the jwt provider signs a new token at each renewal"
            assert writ_server.active(lease.token)
            assert not writ_server.active(first_token)
            assert not lease.lost and lease.renewal_error is None
        assert not writ_server.active(lease.token)


def test_without_renewal_a_short_lease_expires(writ_server: WritDev, client: writ.Client, task: str) -> None:
    with client.lease(task, "orders.lookup", "tokens/orders-read:orders:read@2s", renew=False) as lease:
        time.sleep(2.5)
        assert lease.renewals == 0
        assert not writ_server.active(lease.token)


def test_typed_grants_and_several_at_once(writ_server: WritDev, client: writ.Client, task: str) -> None:
    read = writ.Grant("tokens", "orders-read", ["orders:read"], ttl=60)
    with client.leases(task, "orders.sync", [read, "tokens/orders-read:orders:list"]) as (reader, lister):
        assert reader.scopes == ("orders:read",) and lister.scopes == ("orders:list",)
        assert reader.grant == read
        assert writ_server.active(reader.token) and writ_server.active(lister.token)
    assert not writ_server.active(reader.token) and not writ_server.active(lister.token)


def test_writ_notices_are_kept(client: writ.Client, task: str) -> None:
    with client.lease(task, "orders.lookup", "tokens/orders-read:orders:read@1h") as lease:
        assert any("clamped" in notice for notice in lease.notices), lease.notices


def test_a_denied_grant_raises_denied_with_writs_message(client: writ.Client, task: str) -> None:
    with pytest.raises(writ.Denied) as raised:
        with client.lease(task, "orders.lookup", "tokens/orders-admin:orders:refund"):
            pytest.fail("nothing may be issued")
    assert str(raised.value) == 'no policy permits agent "demo-agent" to issue tokens/orders-admin'
    assert not raised.value.retryable


def test_other_refusals_are_named_by_what_to_do(writ_server: WritDev, client: writ.Client, task: str) -> None:
    with pytest.raises(writ.NotFound, match='task "no-such-task" not found for agent "demo-agent"'):
        client.issue("no-such-task", "orders.lookup", READ)
    with pytest.raises(writ.InvalidRequest, match="does not offer scope"):
        client.issue(task, "orders.lookup", "tokens/orders-read:orders:delete")
    with pytest.raises(writ.NotFound, match="is not configured"):
        client.issue(task, "orders.lookup", "vault/reader")
    closed = writ_server.open_task()
    writ_server.close_task(closed)
    with pytest.raises(writ.PreconditionFailed, match="is closed"):
        client.issue(closed, "orders.lookup", READ)


def test_an_unreachable_writ_is_unavailable_and_retryable(agent_token: str, closed_port: int) -> None:
    with writ.Client(f"http://127.0.0.1:{closed_port}", token=agent_token, timeout=5) as client:
        with pytest.raises(writ.Unavailable) as raised:
            with client.lease("any-task", "orders.lookup", READ):
                pytest.fail("nothing may be issued")
    assert raised.value.retryable and isinstance(raised.value, writ.Retryable)
    assert raised.value.message


def test_a_bad_token_is_unauthenticated(writ_server: WritDev, task: str) -> None:
    with writ.Client(writ_server.endpoint, token="not-a-jwt") as client:
        with pytest.raises(writ.Unauthenticated, match="malformed token"):
            client.issue(task, "orders.lookup", READ)


def test_the_token_file_is_read_again_when_it_changes(
    writ_server: WritDev, agent_token: str, task: str, tmp_path: Path
) -> None:
    path = tmp_path / "writ-token"
    path.write_text(agent_token)
    source = writ.TokenFile(path)
    with writ.Client(writ_server.endpoint, token=source) as client:
        with client.lease(task, "orders.lookup", READ) as lease:
            assert writ_server.active(lease.token)
        path.write_text("rotated.but-not.valid")
        with pytest.raises(writ.Unauthenticated, match="token"):
            client.issue(task, "orders.lookup", READ)
        # A fresh token from the issuer (as the kubelet would rotate it in).
        path.write_text(writ_server.token("agent") + "\n")
        with client.lease(task, "orders.lookup", READ) as lease:
            assert writ_server.active(lease.token)
    assert source.reads == 3


def test_a_callable_token_source_is_asked_before_every_call(writ_server: WritDev, agent_token: str, task: str) -> None:
    calls = []

    def token() -> str:
        calls.append(1)
        return agent_token

    with writ.Client(writ_server.endpoint, token=token) as client:
        with client.lease(task, "orders.lookup", READ):
            pass
    assert len(calls) == 2, "Issue and Release"


def test_the_module_level_lease_reads_the_environment(
    writ_server: WritDev, agent_token: str, task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text(agent_token)
    monkeypatch.setenv("WRIT_ENDPOINT", writ_server.endpoint)
    monkeypatch.setenv("WRIT_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.delenv("WRIT_TOKEN", raising=False)
    with writ.lease(task, "orders.lookup", READ) as lease:
        assert writ_server.active(lease.token)
    assert not writ_server.active(lease.token)


def test_closing_the_task_revokes_the_lease_and_renewal_stops(writ_server: WritDev, client: writ.Client) -> None:
    task = writ_server.open_task()
    with client.lease(task, "orders.lookup", "tokens/orders-read:orders:read@2s") as lease:
        assert writ_server.active(lease.token)
        closed = writ_server.close_task(task)
        assert closed.revoked + closed.retrying == 1
        assert not writ_server.active(lease.token)
        assert eventually(lambda: lease.renewal_stopped, timeout=5)
        assert isinstance(lease.renewal_error, writ.PreconditionFailed)
        assert eventually(lambda: lease.lost, timeout=5)
        with pytest.raises(writ.LeaseLost, match="cannot be renewed"):
            lease.check()
    # Releasing what Writ revoked already succeeds quietly.
    assert lease.released


def test_explicit_issue_renew_release(writ_server: WritDev, client: writ.Client, task: str) -> None:
    (lease,) = client.issue(task, "orders.lookup", "tokens/orders-read:orders:read@30s")
    before = lease.expires_at
    time.sleep(1.1)
    client.renew(lease)
    assert lease.renewals == 1 and lease.expires_at is not None and before is not None and lease.expires_at > before
    client.release(lease)
    assert lease.state in ("revoking", "revoked") and not writ_server.active(lease.token)
    client.release(lease)  # again: changes nothing
