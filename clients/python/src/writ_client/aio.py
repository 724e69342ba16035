"""The asyncio client: the same API as :mod:`writ_client`, awaited.

::

    import writ_client.aio as writ

    async with writ.lease(task_id, "orders.lookup", "tokens/orders-read:orders:read@5m") as lease:
        await call_orders_api(lease.token)

A token source may be a coroutine function here. Renewal runs as an
asyncio task on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
import grpc.aio

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
ApprovalCallback = Callable[[Approval], Any]


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class _Connection:
    def __init__(
        self,
        endpoint: str | None,
        token: TokenLike,
        timeout: float,
        root_certificates: bytes | None,
        channel: grpc.aio.Channel | None,
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
                grpc.aio.secure_channel(target, credentials, options=options)
                if credentials is not None
                else grpc.aio.insecure_channel(target, options=options)
            )
            self._owns_channel = True

    async def token(self) -> str:
        token = await _maybe_await(self._token())
        if not isinstance(token, str):
            raise TypeError("the token source returned no string")
        return token

    async def call(
        self, method: Callable[..., Awaitable[Response]], request: Any, timeout: float | None = None
    ) -> Response:
        metadata = common.metadata(await self.token())
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout, metadata=metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    async def close(self) -> None:
        if self._owns_channel:
            await self.channel.close()


class Client:
    """The asyncio form of :class:`writ_client.Client`; the same arguments.
    Use it as an async context manager, or ``await client.close()``."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token: TokenLike = None,
        timeout: float = common.DEFAULT_TIMEOUT,
        renew_at: float = common.DEFAULT_RENEW_AT,
        approval_timeout: float = common.DEFAULT_APPROVAL_TIMEOUT,
        root_certificates: bytes | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._connection = _Connection(endpoint, token, timeout, root_certificates, channel)
        self._stub = rpc.CredentialServiceStub(self._connection.channel)
        self.renew_at = common.validate_renew_at(renew_at)
        self.approval_timeout = approval_timeout

    @property
    def endpoint(self) -> str:
        return self._connection.endpoint

    async def close(self) -> None:
        await self._connection.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ leases
    @asynccontextmanager
    async def lease(
        self,
        task_id: str,
        tool: str,
        grant: GrantLike,
        *,
        approval_timeout: float | None = None,
        on_approval_required: ApprovalCallback | None = None,
        renew: bool = True,
    ) -> AsyncIterator[Lease]:
        """As :meth:`writ_client.Client.lease`; ``on_approval_required`` may
        be a coroutine function."""
        async with self.leases(
            task_id,
            tool,
            [grant],
            approval_timeout=approval_timeout,
            on_approval_required=on_approval_required,
            renew=renew,
        ) as leases:
            yield leases[0]

    @asynccontextmanager
    async def leases(
        self,
        task_id: str,
        tool: str,
        grants: Iterable[GrantLike],
        *,
        approval_timeout: float | None = None,
        on_approval_required: ApprovalCallback | None = None,
        renew: bool = True,
    ) -> AsyncIterator[list[Lease]]:
        issued = await self.issue(
            task_id,
            tool,
            *grants,
            approval_timeout=approval_timeout,
            on_approval_required=on_approval_required,
        )
        renewer = asyncio.create_task(self._renew_loop(issued), name="writ-renewer") if renew else None
        body_failed = False
        try:
            yield issued
        except BaseException:
            body_failed = True
            raise
        finally:
            if renewer is not None:
                renewer.cancel()
                try:
                    await renewer
                except asyncio.CancelledError:
                    pass
            await self._release_all(issued, raise_errors=not body_failed)

    async def issue(
        self,
        task_id: str,
        tool: str,
        *grants: GrantLike,
        wait_for_approval: bool = True,
        approval_timeout: float | None = None,
        on_approval_required: ApprovalCallback | None = None,
    ) -> list[Lease]:
        """As :meth:`writ_client.Client.issue`."""
        parsed = common.grants_of(grants)
        response = await self._connection.call(self._stub.Issue, common.issue_request(task_id, tool, parsed))
        if response.HasField("approval_required"):
            approval = Approval.from_proto(response.approval_required)
            if not wait_for_approval:
                raise ApprovalRequired(f"{approval.describe()}; nothing was issued yet", approval=approval)
            log.info("writ: %s; waiting for the approvers", approval.describe())
            if on_approval_required is not None:
                await _maybe_await(on_approval_required(approval))
            timeout = self.approval_timeout if approval_timeout is None else approval_timeout
            await self.wait_for_approval(approval.approval_id, timeout=timeout)
            return await self.collect(approval.approval_id, grants=parsed)
        return common.leases_of(response, parsed)

    async def renew(self, lease: Lease) -> Lease:
        response = await self._connection.call(self._stub.Renew, common.renew_request(lease))
        lease._renewed(response)
        return lease

    async def release(self, lease: Lease) -> Lease:
        response = await self._connection.call(self._stub.Release, pb.ReleaseRequest(lease_id=lease.lease_id))
        lease._released(response)
        return lease

    async def _release_all(self, leases: Sequence[Lease], raise_errors: bool) -> None:
        errors: list[WritError] = []
        for lease in leases:
            if lease.released:
                continue
            for attempt in range(3):
                try:
                    await self.release(lease)
                    break
                except NotFound:
                    lease.released = True
                    break
                except WritError as error:
                    if error.retryable and attempt < 2:
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    log.warning("writ: cannot release lease %s: %s", lease.lease_id, error)
                    errors.append(error)
                    break
        if errors and raise_errors:
            raise errors[0]

    async def _renew_loop(self, leases: Sequence[Lease]) -> None:
        loop = asyncio.get_running_loop()
        due = {lease.lease_id: loop.time() + common.renew_delay(lease, self.renew_at) for lease in leases}
        failures = {lease.lease_id: 0 for lease in leases}
        while True:
            live = [lease for lease in leases if not lease.renewal_stopped and not lease.released]
            if not live:
                return
            lease = min(live, key=lambda each: due[each.lease_id])
            wait = due[lease.lease_id] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            before = lease.expires_at
            try:
                await self.renew(lease)
            except WritError as error:
                lease.renewal_error = error
                failures[lease.lease_id] += 1
                retry = common.retry_delay(lease, failures[lease.lease_id]) if error.retryable else None
                if retry is None:
                    lease.renewal_stopped = True
                    log.warning("writ: stopped renewing lease %s: %s", lease.lease_id, error)
                else:
                    log.info("writ: renewing lease %s failed (%s); trying again", lease.lease_id, error)
                    due[lease.lease_id] = loop.time() + retry
                continue
            except asyncio.CancelledError:
                raise
            except Exception as error:
                lease.renewal_error = WritError(f"cannot renew: {error}")
                lease.renewal_stopped = True
                log.warning("writ: stopped renewing lease %s: %s", lease.lease_id, error)
                continue
            failures[lease.lease_id] = 0
            after = lease.expires_at
            if before is not None and after is not None and after <= before:
                lease.renewal_stopped = True
                log.info("writ: lease %s cannot be extended past %s", lease.lease_id, after.isoformat())
                continue
            due[lease.lease_id] = loop.time() + common.renew_delay(lease, self.renew_at)

    # --------------------------------------------------------- approvals
    async def watch_approval(self, approval_id: str, timeout: float | None = None) -> AsyncGenerator[Approval, None]:
        """As :meth:`writ_client.Client.watch_approval`, an async iterator."""
        metadata = common.metadata(await self._connection.token())
        stream = self._stub.WatchApproval(
            pb.WatchApprovalRequest(approval_id=approval_id), timeout=timeout, metadata=metadata
        )
        try:
            async for message in stream:
                yield Approval.from_proto(message)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        finally:
            stream.cancel()

    async def wait_for_approval(
        self,
        approval_id: str,
        timeout: float | None = None,
        on_update: ApprovalCallback | None = None,
    ) -> Approval:
        """As :meth:`writ_client.Client.wait_for_approval`."""
        limit = self.approval_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        last: Approval | None = None
        failures = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise common.approval_timeout_error(approval_id, limit, last)
            watch = self.watch_approval(approval_id, timeout=remaining)
            try:
                async for approval in watch:
                    last = approval
                    failures = 0
                    if on_update is not None:
                        await _maybe_await(on_update(approval))
                    if approval.state == "approved":
                        return approval
                    ended = common.approval_outcome(approval)
                    if ended is not None:
                        raise await self._ended(approval, ended)
            except DeadlineExceeded:
                raise common.approval_timeout_error(approval_id, limit, last) from None
            except WritError as error:
                if not error.retryable:
                    raise
                failures += 1
                pause = min(0.2 * 2**failures, 5.0, max(deadline - time.monotonic(), 0.0))
                log.info("writ: watching approval %s failed (%s); watching again", approval_id, error)
                await asyncio.sleep(pause)
            finally:
                await watch.aclose()

    async def _ended(self, approval: Approval, fallback: WritError) -> WritError:
        """As :meth:`writ_client.Client._ended`."""
        try:
            leases = await self.collect(approval.approval_id)
        except (ApprovalDenied, ApprovalEnded) as error:
            error.approval = approval
            return error
        except WritError:
            return fallback
        await self._release_all(leases, raise_errors=False)
        return fallback

    async def collect(self, approval_id: str, grants: Sequence[Grant] | None = None) -> list[Lease]:
        """As :meth:`writ_client.Client.collect`."""
        try:
            response = await self._connection.call(
                self._stub.CollectApproval, pb.CollectApprovalRequest(approval_id=approval_id)
            )
        except WritError as error:
            raise common.collect_error(error, approval_id) from error
        return common.leases_of(response, grants)


class TaskClient:
    """The asyncio form of :class:`writ_client.TaskClient`."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token: TokenLike = None,
        timeout: float = common.DEFAULT_TIMEOUT,
        root_certificates: bytes | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._connection = _Connection(endpoint, token, timeout, root_certificates, channel)
        self._stub = rpc.TaskServiceStub(self._connection.channel)

    async def close(self) -> None:
        await self._connection.close()

    async def __aenter__(self) -> TaskClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(
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
        task = common.task_of(await self._connection.call(self._stub.StartTask, request))
        assert task is not None, "StartTask answered no task"
        return task

    async def close_task(self, task_id: str) -> ClosedTask:
        response = await self._connection.call(self._stub.CloseTask, pb.CloseTaskRequest(task_id=task_id))
        return ClosedTask(common.task_of(response), response.revoked, response.retrying, response.failed)

    async def get(self, task_id: str) -> tuple[Task, list[pb.Lease]]:
        response = await self._connection.call(self._stub.GetTask, pb.GetTaskRequest(task_id=task_id))
        task = common.task_of(response)
        assert task is not None, "GetTask answered no task"
        return task, list(response.leases)


@asynccontextmanager
async def lease(
    task_id: str,
    tool: str,
    grant: GrantLike,
    *,
    endpoint: str | None = None,
    token: TokenLike = None,
    approval_timeout: float | None = None,
    on_approval_required: ApprovalCallback | None = None,
    renew_at: float = common.DEFAULT_RENEW_AT,
) -> AsyncIterator[Lease]:
    """:meth:`Client.lease` with a client made for the block."""
    async with Client(endpoint, token=token, renew_at=renew_at) as client:
        async with client.lease(
            task_id, tool, grant, approval_timeout=approval_timeout, on_approval_required=on_approval_required
        ) as issued:
            yield issued


@asynccontextmanager
async def leases(
    task_id: str,
    tool: str,
    grants: Iterable[GrantLike],
    *,
    endpoint: str | None = None,
    token: TokenLike = None,
    approval_timeout: float | None = None,
    on_approval_required: ApprovalCallback | None = None,
    renew_at: float = common.DEFAULT_RENEW_AT,
) -> AsyncIterator[list[Lease]]:
    """:meth:`Client.leases` with a client made for the block."""
    async with Client(endpoint, token=token, renew_at=renew_at) as client:
        async with client.leases(
            task_id, tool, grants, approval_timeout=approval_timeout, on_approval_required=on_approval_required
        ) as issued:
            yield issued
