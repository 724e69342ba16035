"""What Writ hands out: leases, credentials, approval requests, tasks."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from ._errors import LeaseLost, WritError
from ._grant import Grant
from ._proto.writ.v1 import writ_pb2 as pb

__all__ = [
    "Approval",
    "ApprovalVote",
    "AwsSession",
    "BearerToken",
    "ClosedTask",
    "Credential",
    "Lease",
    "Password",
    "Task",
]


@dataclass(frozen=True)
class BearerToken:
    """An access token, sent as ``Authorization: <token_type> <token>``."""

    token: str = field(repr=False)
    token_type: str = "Bearer"

    @property
    def authorization(self) -> str:
        """The value of an ``Authorization`` header."""
        return f"{self.token_type or 'Bearer'} {self.token}"


@dataclass(frozen=True)
class Password:
    """A database login: ``connection`` holds ``host``, ``port``,
    ``dbname`` and whatever else the provider tells."""

    username: str
    password: str = field(repr=False)
    connection: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AwsSession:
    """AWS STS session credentials."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)

    def environment(self) -> dict[str, str]:
        """As the ``AWS_*`` environment variables the AWS SDKs read."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
        }


Credential = BearerToken | Password | AwsSession


def to_datetime(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    value: datetime = stamp.ToDatetime(tzinfo=timezone.utc)
    return value


def to_timedelta(message: Any, name: str) -> timedelta | None:
    if not message.HasField(name):
        return None
    duration: duration_pb2.Duration = getattr(message, name)
    value: timedelta = duration.ToTimedelta()
    return value


def enum_name(enum: Any, value: int, prefix: str) -> str:
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name[len(prefix) :].lower() if name.startswith(prefix) else name.lower()


def credential_from(message: pb.Credential) -> Credential | None:
    kind = message.WhichOneof("kind")
    if kind == "bearer_token":
        return BearerToken(message.bearer_token.token, message.bearer_token.token_type)
    if kind == "password":
        return Password(message.password.username, message.password.password, dict(message.password.connection))
    if kind == "aws_session":
        session = message.aws_session
        return AwsSession(session.access_key_id, session.secret_access_key, session.session_token)
    return None


def grant_from(message: pb.GrantRequest) -> Grant:
    return Grant(message.provider, message.role, tuple(message.scopes), to_timedelta(message, "ttl"))


def grant_to(grant: Grant) -> pb.GrantRequest:
    request = pb.GrantRequest(provider=grant.provider, role=grant.role, scopes=list(grant.scopes))
    if grant.ttl is not None:
        request.ttl.FromTimedelta(grant.ttl)
    return request


class Lease:
    """A credential Writ issued, and the lease that tracks it.

    While a ``with client.lease(...)`` block runs, a background renewal
    keeps it alive and may replace the credential (signed tokens carry
    their own expiry), so read ``credential`` (or ``token``, ``password``
    …) when you use it rather than keeping a copy.
    """

    def __init__(self, issued: pb.IssuedCredential, grant: Grant | None = None) -> None:
        self._lock = threading.Lock()
        self._lease = issued.lease
        self._credential = credential_from(issued.credential) if issued.HasField("credential") else None
        self.notices: list[str] = list(issued.notices)
        #: The grant as asked (its TTL is asked again at each renewal).
        self.grant: Grant = grant or Grant(self._lease.provider, self._lease.role, tuple(self._lease.scopes))
        #: How many renewals went through.
        self.renewals = 0
        #: The last renewal error, if the last renewal failed.
        self.renewal_error: WritError | None = None
        #: Whether renewal gave up for good (an error that retrying cannot
        #: fix, or the lease reached the end Writ allows).
        self.renewal_stopped = False
        self.released = False
        # Writ's clock minus this machine's, estimated when it was issued.
        self._clock_offset = timedelta(0)

    # ------------------------------------------------------------ identity
    @property
    def lease_id(self) -> str:
        return self._lease.lease_id

    @property
    def agent(self) -> str:
        return self._lease.agent

    @property
    def task_id(self) -> str:
        return self._lease.task_id

    @property
    def provider(self) -> str:
        return self._lease.provider

    @property
    def role(self) -> str:
        return self._lease.role

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self._lease.scopes)

    @property
    def tool(self) -> str:
        return self._lease.tool

    @property
    def state(self) -> str:
        """``active``, ``revoking``, ``revoked`` … as Writ last said."""
        return enum_name(pb.LeaseState, self._lease.state, "LEASE_STATE_")

    @property
    def shape(self) -> str:
        """``revocable`` (revocation kills it at once) or ``expiry_only``."""
        return enum_name(pb.CredentialShape, self._lease.shape, "CREDENTIAL_SHAPE_")

    @property
    def issued_at(self) -> datetime | None:
        return to_datetime(self._lease, "issued_at")

    @property
    def expires_at(self) -> datetime | None:
        """When the lease ends unless renewed (moved by each renewal)."""
        return to_datetime(self._lease, "expires_at")

    @property
    def raw(self) -> pb.Lease:
        """The ``writ.v1.Lease`` message as Writ last sent it."""
        return self._lease

    # ---------------------------------------------------------- credential
    @property
    def credential(self) -> Credential | None:
        """The current credential."""
        return self._credential

    @property
    def token(self) -> str:
        """The bearer token (for a provider that issues tokens)."""
        credential = self._credential
        if not isinstance(credential, BearerToken):
            raise TypeError(f"lease {self.lease_id} of {self.provider}/{self.role} holds no bearer token")
        return credential.token

    @property
    def password(self) -> Password:
        """The login (for a provider that issues passwords, e.g. ``postgres``)."""
        credential = self._credential
        if not isinstance(credential, Password):
            raise TypeError(f"lease {self.lease_id} of {self.provider}/{self.role} holds no password")
        return credential

    @property
    def aws(self) -> AwsSession:
        """The session (for the ``aws_sts`` provider)."""
        credential = self._credential
        if not isinstance(credential, AwsSession):
            raise TypeError(f"lease {self.lease_id} of {self.provider}/{self.role} holds no AWS session")
        return credential

    # --------------------------------------------------------------- state
    def expired(self, now: datetime | None = None) -> bool:
        """Whether the lease's expiry has passed (by this machine's clock)."""
        expires = self.expires_at
        return expires is not None and (now or datetime.now(timezone.utc)) >= expires

    @property
    def lost(self) -> bool:
        """Whether the lease is gone or about to be: released, revoked at
        Writ, or renewal gave up and the expiry passed."""
        if self.released or self.state in ("revoking", "revoked", "failed"):
            return True
        return self.expired() and (self.renewal_stopped or self.renewal_error is not None)

    def check(self) -> None:
        """Raises :class:`LeaseLost` if the lease is lost (see ``lost``)."""
        if self.lost:
            cause = self.renewal_error
            reason = f": {cause.message}" if cause is not None else ""
            raise LeaseLost(
                f"lease {self.lease_id} of {self.provider}/{self.role} is lost{reason}", lease=self, cause=cause
            )

    # ------------------------------------------------------------- updates
    def _renewed(self, response: pb.RenewResponse) -> None:
        with self._lock:
            if response.HasField("lease"):
                self._lease = response.lease
            if response.HasField("credential"):
                credential = credential_from(response.credential)
                if credential is not None:
                    self._credential = credential
            self.notices = list(response.notices)
            self.renewals += 1
            self.renewal_error = None

    def _released(self, response: pb.ReleaseResponse) -> None:
        with self._lock:
            if response.HasField("lease"):
                self._lease = response.lease
            self.released = True

    def __repr__(self) -> str:
        expires = self.expires_at.isoformat() if self.expires_at else "-"
        return f"<Lease {self.lease_id} {self.provider}/{self.role} task {self.task_id} {self.state} expires {expires}>"


@dataclass(frozen=True)
class ApprovalVote:
    by: str
    approve: bool
    reason: str
    at: datetime | None


@dataclass(frozen=True)
class Approval:
    """A step-up approval request, as Writ last described it."""

    approval_id: str
    agent: str
    task_id: str
    tool: str
    grants: tuple[Grant, ...]
    group: str
    quorum: int
    policies: tuple[str, ...]
    #: ``pending``, ``approved``, ``denied``, ``expired``, ``cancelled``, ``collected``.
    state: str
    created_at: datetime | None
    expires_at: datetime | None
    votes: tuple[ApprovalVote, ...]
    collect_by: datetime | None
    ended_by: str
    end_reason: str
    raw: pb.Approval = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: pb.Approval) -> Approval:
        return cls(
            approval_id=message.approval_id,
            agent=message.agent,
            task_id=message.task_id,
            tool=message.tool,
            grants=tuple(grant_from(grant) for grant in message.grants),
            group=message.group,
            quorum=message.quorum,
            policies=tuple(message.policies),
            state=enum_name(pb.ApprovalState, message.state, "APPROVAL_STATE_"),
            created_at=to_datetime(message, "created_at"),
            expires_at=to_datetime(message, "expires_at"),
            votes=tuple(
                ApprovalVote(vote.by, vote.approve, vote.reason, to_datetime(vote, "at")) for vote in message.votes
            ),
            collect_by=to_datetime(message, "collect_by"),
            ended_by=message.ended_by,
            end_reason=message.end_reason,
            raw=message,
        )

    @property
    def approvals(self) -> int:
        """How many approvers approved so far."""
        return sum(1 for vote in self.votes if vote.approve)

    def describe(self) -> str:
        """E.g. ``approval request 0193… is pending: 1 of 2 approvals from group "orders-approvers"``."""
        return (
            f"approval request {self.approval_id} is {self.state}: {self.approvals} of {self.quorum} approvals "
            f"from group {self.group!r}"
        )


@dataclass(frozen=True)
class Task:
    task_id: str
    agent: str
    #: ``open`` or ``closed``.
    state: str
    purpose: str
    environment: str
    data_classification: str
    ticket: str
    labels: Mapping[str, str]
    created_at: datetime | None
    created_by: str
    deadline: datetime | None
    closed_at: datetime | None
    closed_by: str
    close_reason: str

    @classmethod
    def from_proto(cls, message: pb.Task) -> Task:
        context = message.context
        return cls(
            task_id=message.task_id,
            agent=message.agent,
            state=enum_name(pb.TaskState, message.state, "TASK_STATE_"),
            purpose=context.purpose,
            environment=context.environment,
            data_classification=context.data_classification,
            ticket=context.ticket,
            labels=dict(context.labels),
            created_at=to_datetime(message, "created_at"),
            created_by=message.created_by,
            deadline=to_datetime(message, "deadline"),
            closed_at=to_datetime(message, "closed_at"),
            closed_by=message.closed_by,
            close_reason=message.close_reason,
        )


@dataclass(frozen=True)
class ClosedTask:
    """What ``CloseTask`` answered: the task, and how its leases' revocations stand."""

    task: Task | None
    #: Leases revoked at their provider by the time the call returned.
    revoked: int
    #: Leases whose revocation is still being retried.
    retrying: int
    #: Leases whose revocation can never succeed (for an operator).
    failed: int
