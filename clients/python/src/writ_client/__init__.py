"""The Python client of Writ, the just-in-time credential broker for AI agents.

::

    import writ_client as writ

    with writ.lease(task_id, "orders.lookup", "tokens/orders-read:orders:read@5m") as lease:
        call_orders_api(lease.token)

The credential is issued when the block starts, renewed in the background
before it expires, and given back (revoked) when the block ends, also on an
exception. The asyncio API is :mod:`writ_client.aio`; the generated gRPC
stubs of the whole API are :mod:`writ_client.proto`. See
``docs/clients/python.md``.
"""

from ._client import Client, TaskClient, lease, leases
from ._errors import (
    AlreadyExists,
    ApprovalDenied,
    ApprovalEnded,
    ApprovalRequired,
    ApprovalTimeout,
    Cancelled,
    Conflict,
    DeadlineExceeded,
    Denied,
    InvalidRequest,
    LeaseLost,
    NotFound,
    PreconditionFailed,
    ResourceExhausted,
    Retryable,
    ServerError,
    TokenUnavailable,
    Unauthenticated,
    Unavailable,
    WritError,
)
from ._grant import Grant, format_duration, parse_duration
from ._token import StaticToken, TokenEnv, TokenFile, TokenSource, token_source
from ._types import (
    Approval,
    ApprovalVote,
    AwsSession,
    BearerToken,
    ClosedTask,
    Credential,
    Lease,
    Password,
    Task,
)
from ._version import __version__

__all__ = [
    "AlreadyExists",
    "Approval",
    "ApprovalDenied",
    "ApprovalEnded",
    "ApprovalRequired",
    "ApprovalTimeout",
    "ApprovalVote",
    "AwsSession",
    "BearerToken",
    "Cancelled",
    "Client",
    "ClosedTask",
    "Conflict",
    "Credential",
    "DeadlineExceeded",
    "Denied",
    "Grant",
    "InvalidRequest",
    "Lease",
    "LeaseLost",
    "NotFound",
    "Password",
    "PreconditionFailed",
    "ResourceExhausted",
    "Retryable",
    "ServerError",
    "StaticToken",
    "Task",
    "TaskClient",
    "TokenEnv",
    "TokenFile",
    "TokenSource",
    "TokenUnavailable",
    "Unauthenticated",
    "Unavailable",
    "WritError",
    "__version__",
    "format_duration",
    "lease",
    "leases",
    "parse_duration",
    "token_source",
]
