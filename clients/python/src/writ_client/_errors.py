"""Writ's gRPC status codes as Python exceptions, named by what the caller does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from ._types import Approval, Lease

__all__ = [
    "AlreadyExists",
    "ApprovalDenied",
    "ApprovalEnded",
    "ApprovalRequired",
    "ApprovalTimeout",
    "Cancelled",
    "Conflict",
    "DeadlineExceeded",
    "Denied",
    "InvalidRequest",
    "LeaseLost",
    "NotFound",
    "PreconditionFailed",
    "ResourceExhausted",
    "Retryable",
    "ServerError",
    "TokenUnavailable",
    "Unauthenticated",
    "Unavailable",
    "WritError",
    "from_rpc_error",
]


class WritError(Exception):
    """Every error this package raises.

    ``message`` is Writ's own message (meant to be shown to the caller);
    ``code`` the gRPC status code, or ``None`` for errors raised by the
    client itself; ``retryable`` whether the same call may succeed later
    unchanged.
    """

    retryable: bool = False

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        code = f", code={self.code.name}" if self.code is not None else ""
        return f"{type(self).__name__}({self.message!r}{code})"


class Unauthenticated(WritError):
    """The workload token is missing, malformed, expired or not trusted
    (``UNAUTHENTICATED``): fix the token source."""


class TokenUnavailable(Unauthenticated):
    """No token could be read from the configured source (no file, an empty
    file, an unset environment variable)."""


class Denied(WritError):
    """Policy or Writ refuses (``PERMISSION_DENIED``): a policy denial, an
    unregistered identity, a suspended agent or provider. Asking again the
    same way gets the same answer."""


class NotFound(WritError):
    """The task, lease, approval, provider or role does not exist for this
    agent (``NOT_FOUND``)."""


class InvalidRequest(WritError):
    """Writ refuses a malformed request (``INVALID_ARGUMENT``): fix the
    request, e.g. a scope the role does not offer or a TTL below its
    minimum."""


class AlreadyExists(WritError):
    """``ALREADY_EXISTS``, e.g. a task id in use."""


class PreconditionFailed(WritError):
    """The state does not allow it (``FAILED_PRECONDITION``): the task is
    closed, the lease is no longer active, too little time is left, the
    provider refused. Something has to change before asking again."""


class Conflict(WritError):
    """Someone else changed the record meanwhile (``ABORTED``): read it
    again, then retry."""

    retryable = True


class Retryable(WritError):
    """The same call may succeed later: retry with backoff."""

    retryable = True


class Unavailable(Retryable):
    """Writ, its store, audit log, a provider or an issuer's keys cannot be
    reached (``UNAVAILABLE``); nothing was issued or changed. Retry later."""


class ResourceExhausted(Retryable):
    """A limit was hit (``RESOURCE_EXHAUSTED``), e.g. too many open
    approval watches. Retry later."""


class DeadlineExceeded(Retryable):
    """The call took longer than its timeout (``DEADLINE_EXCEEDED``)."""


class Cancelled(WritError):
    """The call was cancelled (``CANCELLED``)."""


class ServerError(WritError):
    """A failure only an operator can fix (``INTERNAL``, ``UNKNOWN``,
    ``DATA_LOSS``, ``UNIMPLEMENTED``); details are in Writ's log."""


class ApprovalRequired(WritError):
    """Policy permits the grant only with step-up approval and the caller
    asked not to wait: nothing was issued. ``approval`` is the request;
    wait for it with ``wait_for_approval`` and collect it with
    ``collect``."""

    def __init__(self, message: str, *, approval: Approval) -> None:
        super().__init__(message)
        self.approval = approval


class ApprovalDenied(Denied):
    """An approver denied the request (Writ's message names who and why),
    or the policy in force denies it at collection."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, approval: Approval | None = None) -> None:
        super().__init__(message, code=code)
        self.approval = approval


class ApprovalEnded(PreconditionFailed):
    """The request ended without being approved: it expired, was cancelled
    (task closed, agent suspended) or was collected already. Ask again."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, approval: Approval | None = None) -> None:
        super().__init__(message, code=code)
        self.approval = approval


class ApprovalTimeout(WritError, TimeoutError):
    """The request was not decided within the caller's timeout. It is still
    open at Writ: ``approval`` says where it stands; wait again or give
    up."""

    def __init__(self, message: str, *, approval: Approval) -> None:
        super().__init__(message)
        self.approval = approval


class LeaseLost(WritError):
    """A lease could not be kept alive: renewal failed for good, or the
    lease expired before a renewal got through. ``cause`` is the last
    error."""

    def __init__(self, message: str, *, lease: Lease, cause: WritError | None = None) -> None:
        super().__init__(message)
        self.lease = lease
        self.cause = cause


_BY_CODE: dict[grpc.StatusCode, type[WritError]] = {
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Denied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionFailed,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: ServerError,
    grpc.StatusCode.UNKNOWN: ServerError,
    grpc.StatusCode.DATA_LOSS: ServerError,
    grpc.StatusCode.UNIMPLEMENTED: ServerError,
}


def from_rpc_error(error: Any) -> WritError:
    """The exception for a ``grpc.RpcError`` (sync or asyncio), carrying
    Writ's message."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    if not isinstance(code, grpc.StatusCode):
        return ServerError(str(error) or "the call failed")
    message = details or code.name.lower().replace("_", " ")
    return _BY_CODE.get(code, ServerError)(message, code=code)
