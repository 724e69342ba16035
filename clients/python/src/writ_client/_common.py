"""What the blocking and the asyncio clients share: endpoints, requests,
renewal timing, approval outcomes."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone

import grpc

from ._errors import ApprovalDenied, ApprovalEnded, ApprovalTimeout, WritError
from ._grant import Grant, GrantLike, as_grant
from ._proto.writ.v1 import writ_pb2 as pb
from ._token import ENV_ENDPOINT
from ._types import Approval, Lease, Task

log = logging.getLogger("writ_client")

DEFAULT_ENDPOINT = "http://127.0.0.1:7070"
#: Renew when this fraction of the lifetime left has passed.
DEFAULT_RENEW_AT = 2 / 3
#: How long a call may take, in seconds.
DEFAULT_TIMEOUT = 30.0
#: How long ``lease``/``issue`` wait for approvers by default, in seconds:
#: Writ's own default for an undecided request to expire.
DEFAULT_APPROVAL_TIMEOUT = 900.0
#: The shortest pause between renewals of one lease, in seconds.
MIN_RENEW_DELAY = 0.05

USER_AGENT = "writ-client-python"

ApprovalCallback = Callable[[Approval], object]


def resolve_endpoint(endpoint: str | None) -> str:
    return endpoint or os.environ.get(ENV_ENDPOINT) or DEFAULT_ENDPOINT


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """The gRPC target of ``http://host:port``, ``https://host:port`` or
    ``unix:/path``, and whether it needs TLS."""
    for scheme, tls in (("http://", False), ("https://", True)):
        if endpoint.startswith(scheme):
            target = endpoint[len(scheme) :].rstrip("/")
            if not target or "/" in target:
                raise ValueError(f"endpoint {endpoint!r} must be {scheme}host:port")
            if ":" not in target.rsplit("]", 1)[-1]:
                target += ":443" if tls else ":80"
            return target, tls
    if endpoint.startswith(("unix:", "unix-abstract:")):
        return endpoint, False
    raise ValueError(
        f"endpoint {endpoint!r} must start with http:// (plaintext), https:// (TLS) or unix: "
        "(as WRIT_ENDPOINT does for the writ CLI)"
    )


def channel_options(version: str) -> list[tuple[str, object]]:
    return [
        ("grpc.primary_user_agent", f"{USER_AGENT}/{version}"),
        # Keep a long WatchApproval stream's connection alive through idle
        # middleboxes, without pinging more than servers allow by default.
        ("grpc.keepalive_time_ms", 60_000),
    ]


def credentials_for(tls: bool, root_certificates: bytes | None) -> grpc.ChannelCredentials | None:
    if not tls:
        return None
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def grants_of(grants: Iterable[GrantLike]) -> list[Grant]:
    parsed = [as_grant(grant) for grant in grants]
    if not parsed:
        raise ValueError("ask for at least one grant")
    return parsed


def issue_request(task_id: str, tool: str, grants: Sequence[Grant]) -> pb.IssueRequest:
    from ._types import grant_to

    return pb.IssueRequest(task_id=task_id, tool=tool, grants=[grant_to(grant) for grant in grants])


def renew_request(lease: Lease) -> pb.RenewRequest:
    request = pb.RenewRequest(lease_id=lease.lease_id)
    if lease.grant.ttl is not None:
        request.ttl.FromTimedelta(lease.grant.ttl)
    return request


def leases_of(response: pb.IssueResponse, grants: Sequence[Grant] | None) -> list[Lease]:
    """The leases of an Issue or CollectApproval answer, each with the grant
    it answers (Writ answers in the order asked)."""
    issued = list(response.credentials)
    if grants is not None and len(grants) == len(issued):
        leases = [Lease(credential, grant) for credential, grant in zip(issued, grants, strict=True)]
    else:
        leases = [Lease(credential) for credential in issued]
    now = datetime.now(timezone.utc)
    for lease in leases:
        issued_at = lease.issued_at
        # Writ's clock minus ours (less the call's latency): renewals are
        # timed on Writ's clock, so a skewed local clock does not matter.
        lease._clock_offset = (issued_at - now) if issued_at is not None else timedelta(0)
        for notice in lease.notices:
            log.info("writ: %s/%s: %s", lease.provider, lease.role, notice)
    return leases


def renew_delay(lease: Lease, renew_at: float) -> float:
    """Seconds from now until ``lease`` should be renewed: ``renew_at`` of
    the time it has left, on Writ's clock."""
    expires = lease.expires_at
    if expires is None:
        return MIN_RENEW_DELAY
    remaining = (expires - (datetime.now(timezone.utc) + lease._clock_offset)).total_seconds()
    return max(remaining * renew_at, MIN_RENEW_DELAY)


def retry_delay(lease: Lease, failures: int) -> float | None:
    """When to try a renewal again after ``failures`` retryable failures,
    or ``None`` when the lease will have expired by then."""
    expires = lease.expires_at
    now = datetime.now(timezone.utc) + lease._clock_offset
    remaining = (expires - now).total_seconds() if expires else 0.0
    delay = min(0.25 * 2.0 ** (failures - 1), 10.0, remaining / 3)
    if remaining <= 0.05:
        return None
    return max(delay, MIN_RENEW_DELAY)


def validate_renew_at(renew_at: float) -> float:
    if not 0.0 < renew_at < 1.0:
        raise ValueError("renew_at is a fraction of the lifetime between 0 and 1, e.g. 2/3")
    return renew_at


def approval_outcome(approval: Approval) -> WritError | None:
    """The error for a request that ended without approval (as Writ words
    it at collection), ``None`` while it is pending or once approved."""
    if approval.state == "denied":
        return ApprovalDenied(
            f'approval request {approval.approval_id} was denied by "{approval.ended_by}": "{approval.end_reason}"',
            approval=approval,
        )
    if approval.state in ("expired", "cancelled"):
        reason = f" ({approval.end_reason})" if approval.end_reason else ""
        return ApprovalEnded(f"approval request {approval.approval_id} is {approval.state}{reason}", approval=approval)
    if approval.state == "collected":
        return ApprovalEnded(
            f"approval request {approval.approval_id} was collected already; ask again", approval=approval
        )
    return None


def collect_error(error: WritError, approval_id: str) -> WritError:
    """CollectApproval's refusals as approval errors."""
    if error.code == grpc.StatusCode.PERMISSION_DENIED:
        return ApprovalDenied(error.message, code=error.code)
    if error.code == grpc.StatusCode.FAILED_PRECONDITION and "pending" not in error.message:
        return ApprovalEnded(error.message, code=error.code)
    return error


def deadline_from(deadline: datetime | None, deadline_in: float | timedelta | None) -> datetime:
    if deadline is not None and deadline_in is not None:
        raise ValueError("give deadline or deadline_in, not both")
    if deadline is not None:
        if deadline.tzinfo is None:
            raise ValueError("deadline must be timezone-aware (e.g. datetime.now(timezone.utc) + ...)")
        return deadline
    span = deadline_in if deadline_in is not None else 3600.0
    if not isinstance(span, timedelta):
        span = timedelta(seconds=float(span))
    return datetime.now(timezone.utc) + span


def start_task_request(
    task_id: str,
    agent: str,
    deadline: datetime,
    purpose: str,
    environment: str,
    data_classification: str,
    ticket: str,
    labels: dict[str, str] | None,
) -> pb.StartTaskRequest:
    request = pb.StartTaskRequest(
        task_id=task_id,
        agent=agent,
        context=pb.TaskContext(
            purpose=purpose,
            environment=environment,
            data_classification=data_classification,
            ticket=ticket,
            labels=labels or {},
        ),
    )
    request.deadline.FromDatetime(deadline)
    return request


def task_of(response: pb.StartTaskResponse | pb.GetTaskResponse | pb.CloseTaskResponse) -> Task | None:
    return Task.from_proto(response.task) if response.HasField("task") else None


def approval_timeout_error(approval_id: str, limit: float, last: Approval | None) -> ApprovalTimeout:
    where = last.describe() if last is not None else f"approval request {approval_id} is undecided"
    if last is None:
        last = Approval.from_proto(pb.Approval(approval_id=approval_id, state=pb.APPROVAL_STATE_PENDING))
    return ApprovalTimeout(f"{where}; gave up waiting after {limit:g}s", approval=last)
