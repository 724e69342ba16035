"""The blocking client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc

from . import _common as common
from ._errors import (
    ApprovalDenied,
    ApprovalEnded,
    ApprovalRequired,
    DeadlineExceeded,
    NotFound,
    WritError,
    from_rpc_error,
)
from ._grant import Grant, GrantLike
from ._proto.writ.v1 import writ_pb2 as pb
from ._proto.writ.v1 import writ_pb2_grpc as rpc
from ._token import TokenLike, token_source
from ._types import Approval, ClosedTask, Lease, Task
from ._version import __version__

__all__ = ["Client", "TaskClient", "lease", "leases"]

log = common.log
Response = TypeVar("Response")


class _Connection:
    """A channel to Writ and the caller's token source."""

    def __init__(
        self,
        endpoint: str | None,
        token: TokenLike,
        timeout: float,
        root_certificates: bytes | None,
        channel: grpc.Channel | None,
    ) -> None:
        self.endpoint = common.resolve_endpoint(endpoint)
        self.timeout = timeout
        self._token = token_source(token)
        if channel is not None:
            self.channel = channel
            self._owns_channel = False
        else:
            target, tls = common.parse_endpoint(self.endpoint)
            options = common.channel_options(__version__)
            credentials = common.credentials_for(tls, root_certificates)
            self.channel = (
                grpc.secure_channel(target, credentials, options=options)
                if credentials is not None
                else grpc.insecure_channel(target, options=options)
            )
            self._owns_channel = True

    def token(self) -> str:
        token = self._token()
        if not isinstance(token, str):
            raise TypeError("the token source returned no string (an async token source needs writ_client.aio)")
        return token

    def call(self, method: Callable[..., Response], request: Any, timeout: float | None = None) -> Response:
        metadata = common.metadata(self.token())
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout, metadata=metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()


class Client:
    """An agent's client of Writ's ``CredentialService``.

    ``endpoint`` is ``http://host:port`` (plaintext), ``https://host:port``
    (TLS, with the system's roots or ``root_certificates``) or
    ``unix:/path``; unset, ``$WRIT_ENDPOINT``, else
    ``http://127.0.0.1:7070``. ``token`` is where the workload token comes
    from (see :func:`writ_client.token_source`); unset, ``$WRIT_TOKEN_FILE``
    or ``$WRIT_TOKEN``. ``renew_at`` is the fraction of a lease's lifetime
    after which it is renewed.

    A client holds one gRPC channel; use it as a context manager, or call
    :meth:`close`, when done.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token: TokenLike = None,
        timeout: float = common.DEFAULT_TIMEOUT,
        renew_at: float = common.DEFAULT_RENEW_AT,
        approval_timeout: float = common.DEFAULT_APPROVAL_TIMEOUT,
        root_certificates: bytes | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self._connection = _Connection(endpoint, token, timeout, root_certificates, channel)
        self._stub = rpc.CredentialServiceStub(self._connection.channel)
        self.renew_at = common.validate_renew_at(renew_at)
        self.approval_timeout = approval_timeout

    @property
    def endpoint(self) -> str:
        return self._connection.endpoint

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ leases
    @contextmanager
    def lease(
        self,
        task_id: str,
        tool: str,
        grant: GrantLike,
        *,
        approval_timeout: float | None = None,
        on_approval_required: common.ApprovalCallback | None = None,
        renew: bool = True,
    ) -> Iterator[Lease]:
        """Issues one credential for ``tool`` in ``task_id``, keeps it
        alive, and gives it back when the block ends, also on an exception::

            with client.lease(task_id, "orders.lookup", "tokens/orders-read:orders:read@5m") as lease:
                call_orders_api(lease.token)

        ``grant`` is a :class:`Grant` or its text form
        ``provider/role[:scope,…][@ttl]``. If policy wants step-up approval,
        this waits up to ``approval_timeout`` seconds for the approvers
        (calling ``on_approval_required`` with the request first), then
        collects the credential. A background thread renews the lease after
        ``renew_at`` of its lifetime (``renew=False`` turns that off).
        """
        with self.leases(
            task_id,
            tool,
            [grant],
            approval_timeout=approval_timeout,
            on_approval_required=on_approval_required,
            renew=renew,
        ) as leases:
            yield leases[0]

    @contextmanager
    def leases(
        self,
        task_id: str,
        tool: str,
        grants: Iterable[GrantLike],
        *,
        approval_timeout: float | None = None,
        on_approval_required: common.ApprovalCallback | None = None,
        renew: bool = True,
    ) -> Iterator[list[Lease]]:
        """As :meth:`lease` for several grants at once: all are issued or
        none, and all are renewed and released together."""
        issued = self.issue(
            task_id,
            tool,
            *grants,
            approval_timeout=approval_timeout,
            on_approval_required=on_approval_required,
        )
        renewer = _Renewer(self, issued) if renew else None
        if renewer is not None:
            renewer.start()
        body_failed = False
        try:
            yield issued
        except BaseException:
            body_failed = True
            raise
        finally:
            if renewer is not None:
                renewer.stop()
            self._release_all(issued, raise_errors=not body_failed)

    def issue(
        self,
        task_id: str,
        tool: str,
        *grants: GrantLike,
        wait_for_approval: bool = True,
        approval_timeout: float | None = None,
        on_approval_required: common.ApprovalCallback | None = None,
    ) -> list[Lease]:
        """Issues one credential per grant (all or none) and returns the
        leases, without renewing or releasing them: that is the caller's
        job (:meth:`renew`, :meth:`release`), or use :meth:`lease`.

        When policy wants approval, waits for it and collects, or with
        ``wait_for_approval=False`` raises :class:`ApprovalRequired`.
        """
        parsed = common.grants_of(grants)
        response = self._connection.call(self._stub.Issue, common.issue_request(task_id, tool, parsed))
        if response.HasField("approval_required"):
            approval = Approval.from_proto(response.approval_required)
            if not wait_for_approval:
                raise ApprovalRequired(f"{approval.describe()}; nothing was issued yet", approval=approval)
            log.info("writ: %s; waiting for the approvers", approval.describe())
            if on_approval_required is not None:
                on_approval_required(approval)
            timeout = self.approval_timeout if approval_timeout is None else approval_timeout
            self.wait_for_approval(approval.approval_id, timeout=timeout)
            return self.collect(approval.approval_id, grants=parsed)
        return common.leases_of(response, parsed)

    def renew(self, lease: Lease) -> Lease:
        """Renews ``lease`` now, for its grant's TTL (or the role's default),
        and updates it (a new expiry, maybe a new credential)."""
        response = self._connection.call(self._stub.Renew, common.renew_request(lease))
        lease._renewed(response)
        return lease

    def release(self, lease: Lease) -> Lease:
        """Gives ``lease`` back: Writ revokes it at once. Releasing a lease
        that is already revoked changes nothing."""
        response = self._connection.call(self._stub.Release, pb.ReleaseRequest(lease_id=lease.lease_id))
        lease._released(response)
        return lease

    def _release_all(self, leases: Sequence[Lease], raise_errors: bool) -> None:
        errors: list[WritError] = []
        for lease in leases:
            if lease.released:
                continue
            for attempt in range(3):
                try:
                    self.release(lease)
                    break
                except NotFound:
                    lease.released = True  # gone already
                    break
                except WritError as error:
                    if error.retryable and attempt < 2:
                        time.sleep(0.2 * (attempt + 1))
                        continue
                    log.warning("writ: cannot release lease %s: %s", lease.lease_id, error)
                    errors.append(error)
                    break
        if errors and raise_errors:
            raise errors[0]

    # --------------------------------------------------------- approvals
    def watch_approval(self, approval_id: str, timeout: float | None = None) -> Iterator[Approval]:
        """The approval request now, then at every change, until it is
        approved or ends (``WatchApproval``)."""
        metadata = common.metadata(self._connection.token())
        stream = self._stub.WatchApproval(
            pb.WatchApprovalRequest(approval_id=approval_id), timeout=timeout, metadata=metadata
        )
        try:
            for message in stream:
                yield Approval.from_proto(message)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            stream.cancel()

    def wait_for_approval(
        self,
        approval_id: str,
        timeout: float | None = None,
        on_update: common.ApprovalCallback | None = None,
    ) -> Approval:
        """Waits until the request is approved and returns it; raises
        :class:`ApprovalDenied` or :class:`ApprovalEnded` if it ends
        otherwise, :class:`ApprovalTimeout` after ``timeout`` seconds
        (default: the client's ``approval_timeout``). A broken stream is
        watched again."""
        limit = self.approval_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        last: Approval | None = None
        failures = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise common.approval_timeout_error(approval_id, limit, last)
            try:
                for approval in self.watch_approval(approval_id, timeout=remaining):
                    last = approval
                    failures = 0
                    if on_update is not None:
                        on_update(approval)
                    if approval.state == "approved":
                        return approval
                    ended = common.approval_outcome(approval)
                    if ended is not None:
                        raise self._ended(approval, ended)
            except DeadlineExceeded:
                raise common.approval_timeout_error(approval_id, limit, last) from None
            except WritError as error:
                if not error.retryable:
                    raise
                failures += 1
                pause = min(0.2 * 2**failures, 5.0, max(deadline - time.monotonic(), 0.0))
                log.info("writ: watching approval %s failed (%s); watching again", approval_id, error)
                time.sleep(pause)

    def _ended(self, approval: Approval, fallback: WritError) -> WritError:
        """The error for a request that ended unapproved, in Writ's words:
        collecting it is refused with the reason (who denied it and why,
        or how it ended). Nothing can be issued for such a request."""
        try:
            leases = self.collect(approval.approval_id)
        except (ApprovalDenied, ApprovalEnded) as error:
            error.approval = approval
            return error
        except WritError:
            return fallback
        self._release_all(leases, raise_errors=False)
        return fallback

    def collect(self, approval_id: str, grants: Sequence[Grant] | None = None) -> list[Lease]:
        """Collects what an approved request grants, once
        (``CollectApproval``)."""
        try:
            response = self._connection.call(
                self._stub.CollectApproval, pb.CollectApprovalRequest(approval_id=approval_id)
            )
        except WritError as error:
            raise common.collect_error(error, approval_id) from error
        return common.leases_of(response, grants)


class _Renewer:
    """Renews a ``with`` block's leases on a daemon thread."""

    def __init__(self, client: Client, leases: Sequence[Lease]) -> None:
        self._client = client
        self._leases = list(leases)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writ-renewer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self._client._connection.timeout + 1)

    def _run(self) -> None:
        renew_at = self._client.renew_at
        due = {lease.lease_id: time.monotonic() + common.renew_delay(lease, renew_at) for lease in self._leases}
        failures = {lease.lease_id: 0 for lease in self._leases}
        while not self._stop.is_set():
            live = [lease for lease in self._leases if not lease.renewal_stopped and not lease.released]
            if not live:
                return
            lease = min(live, key=lambda each: due[each.lease_id])
            wait = due[lease.lease_id] - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            before = lease.expires_at
            try:
                self._client.renew(lease)
            except WritError as error:
                if self._stop.is_set():
                    return
                lease.renewal_error = error
                failures[lease.lease_id] += 1
                retry = common.retry_delay(lease, failures[lease.lease_id]) if error.retryable else None
                if retry is None:
                    lease.renewal_stopped = True
                    log.warning("writ: stopped renewing lease %s: %s", lease.lease_id, error)
                else:
                    log.info("writ: renewing lease %s failed (%s); trying again", lease.lease_id, error)
                    due[lease.lease_id] = time.monotonic() + retry
                continue
            except Exception as error:  # a token source that failed unexpectedly
                lease.renewal_error = WritError(f"cannot renew: {error}")
                lease.renewal_stopped = True
                log.warning("writ: stopped renewing lease %s: %s", lease.lease_id, error)
                continue
            failures[lease.lease_id] = 0
            after = lease.expires_at
            if before is not None and after is not None and after <= before:
                # Clamped (the task's deadline): renewing again gains nothing.
                lease.renewal_stopped = True
                log.info("writ: lease %s cannot be extended past %s", lease.lease_id, after.isoformat())
                continue
            due[lease.lease_id] = time.monotonic() + common.renew_delay(lease, renew_at)


class TaskClient:
    """A workflow engine's client of Writ's ``TaskService`` (role
    ``workflow``): opens the tasks agents ask under, and closes them, which
    revokes everything issued under them. Arguments as for :class:`Client`
    (the token is the workflow engine's own)."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token: TokenLike = None,
        timeout: float = common.DEFAULT_TIMEOUT,
        root_certificates: bytes | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self._connection = _Connection(endpoint, token, timeout, root_certificates, channel)
        self._stub = rpc.TaskServiceStub(self._connection.channel)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> TaskClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self,
        task_id: str,
        agent: str,
        *,
        deadline: Any = None,
        deadline_in: Any = None,
        purpose: str = "",
        environment: str = "",
        data_classification: str = "",
        ticket: str = "",
        labels: dict[str, str] | None = None,
    ) -> Task:
        """Opens a task for ``agent``, closing itself at ``deadline`` (an
        aware ``datetime``) or after ``deadline_in`` (seconds or a
        ``timedelta``; one hour if neither is given)."""
        request = common.start_task_request(
            task_id,
            agent,
            common.deadline_from(deadline, deadline_in),
            purpose,
            environment,
            data_classification,
            ticket,
            labels,
        )
        task = common.task_of(self._connection.call(self._stub.StartTask, request))
        assert task is not None, "StartTask answered no task"
        return task

    def close_task(self, task_id: str) -> ClosedTask:
        """Closes the task; every lease issued under it is revoked."""
        response = self._connection.call(self._stub.CloseTask, pb.CloseTaskRequest(task_id=task_id))
        return ClosedTask(common.task_of(response), response.revoked, response.retrying, response.failed)

    def get(self, task_id: str) -> tuple[Task, list[pb.Lease]]:
        """The task and every lease issued under it (``writ.v1.Lease`` messages)."""
        response = self._connection.call(self._stub.GetTask, pb.GetTaskRequest(task_id=task_id))
        task = common.task_of(response)
        assert task is not None, "GetTask answered no task"
        return task, list(response.leases)


@contextmanager
def lease(
    task_id: str,
    tool: str,
    grant: GrantLike,
    *,
    endpoint: str | None = None,
    token: TokenLike = None,
    approval_timeout: float | None = None,
    on_approval_required: common.ApprovalCallback | None = None,
    renew_at: float = common.DEFAULT_RENEW_AT,
) -> Iterator[Lease]:
    """:meth:`Client.lease` with a client made for the block from
    ``endpoint`` and ``token`` (by default ``$WRIT_ENDPOINT`` and
    ``$WRIT_TOKEN_FILE`` or ``$WRIT_TOKEN``)."""
    with Client(endpoint, token=token, renew_at=renew_at) as client:
        with client.lease(
            task_id, tool, grant, approval_timeout=approval_timeout, on_approval_required=on_approval_required
        ) as issued:
            yield issued


@contextmanager
def leases(
    task_id: str,
    tool: str,
    grants: Iterable[GrantLike],
    *,
    endpoint: str | None = None,
    token: TokenLike = None,
    approval_timeout: float | None = None,
    on_approval_required: common.ApprovalCallback | None = None,
    renew_at: float = common.DEFAULT_RENEW_AT,
) -> Iterator[list[Lease]]:
    """:meth:`Client.leases` with a client made for the block."""
    with Client(endpoint, token=token, renew_at=renew_at) as client:
        with client.leases(
            task_id, tool, grants, approval_timeout=approval_timeout, on_approval_required=on_approval_required
        ) as issued:
            yield issued
