"""A real Writ for the tests: ``writ dev`` on free ports, started once per
session from ``$WRIT_BIN`` (``cargo test --test python_client`` sets it to
the freshly built binary; else ``writ`` on ``PATH``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

import writ_client as writ
from writ_client.proto import writ_pb2, writ_pb2_grpc

REPO = Path(__file__).resolve().parents[3]


def writ_binary() -> str:
    binary = os.environ.get("WRIT_BIN") or shutil.which("writ")
    if not binary or not Path(binary).exists():
        pytest.exit(
            "no writ binary: build it (`cargo build --bin writ`) and set WRIT_BIN to it, "
            "or run `cargo test --test python_client`",
            returncode=4,
        )
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the test process dies, even if it
    is killed outright."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")
    try:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    finally:
        handle.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"writ exited with {process.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"writ did not listen on {port} within {timeout}s:\n{tail(log)}")


def tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class WritDev:
    """``writ dev`` in a data directory of its own: an embedded store, the
    development issuer, the example policy, a ``tokens`` JWT provider and the
    agent ``demo-agent``."""

    def __init__(self, binary: str, data_dir: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        for attempt in range(3):
            self.grpc_port, self.http_port, self.issuer_port = free_port(), free_port(), free_port()
            self.process = spawn(
                [
                    binary,
                    "dev",
                    "--data-dir",
                    str(data_dir),
                    "--listen",
                    f"127.0.0.1:{self.grpc_port}",
                    "--http-listen",
                    f"127.0.0.1:{self.http_port}",
                    "--issuer-listen",
                    f"127.0.0.1:{self.issuer_port}",
                ],
                self.log,
                env={**os.environ, "WRIT_LOG": os.environ.get("WRIT_LOG", "info")},
            )
            try:
                for port in (self.issuer_port, self.http_port, self.grpc_port):
                    wait_for_port(port, self.process, self.log)
                break
            except RuntimeError:
                stop(self.process)
                if attempt == 2:
                    raise
        self.endpoint = f"http://127.0.0.1:{self.grpc_port}"
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.issuer_listen = f"127.0.0.1:{self.issuer_port}"

    def token(self, who: str) -> str:
        """A development workload token (``agent``, ``workflow``,
        ``operator``, ``approver``, ``approver-2`` …), valid for an hour."""
        with self._lock:
            if who not in self._tokens:
                self._tokens[who] = subprocess.run(
                    [
                        self.binary,
                        "token",
                        "--data-dir",
                        str(self.data_dir),
                        "--issuer-listen",
                        self.issuer_listen,
                        who,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=30,
                ).stdout.strip()
            return self._tokens[who]

    def tasks(self) -> writ.TaskClient:
        return writ.TaskClient(self.endpoint, token=self.token("workflow"))

    def open_task(self, environment: str = "dev", deadline_in: float = 600) -> str:
        task_id = f"py-{environment}-{uuid.uuid4().hex[:12]}"
        with self.tasks() as tasks:
            tasks.start(task_id, "demo-agent", environment=environment, deadline_in=deadline_in)
        return task_id

    def close_task(self, task_id: str) -> writ.ClosedTask:
        with self.tasks() as tasks:
            return tasks.close_task(task_id)

    def leases(self, task_id: str) -> list[writ_pb2.Lease]:
        with self.tasks() as tasks:
            return tasks.get(task_id)[1]

    def introspect(self, token: str) -> dict:
        """RFC 7662 introspection of a ``tokens`` token, as a resource server
        (the dev operator has the ``resource_server`` role)."""
        request = urllib.request.Request(
            f"{self.http}/providers/tokens/introspect",
            data=urllib.parse.urlencode({"token": token}).encode(),
            headers={"authorization": f"Bearer {self.token('operator')}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response))

    def active(self, token: str) -> bool:
        return bool(self.introspect(token)["active"])

    def decide(
        self, approval_id: str, approver: str, approve: bool = True, reason: str = "checked by the test"
    ) -> writ_pb2.Approval:
        """One approver's vote through ``ApprovalService``."""
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = writ_pb2_grpc.ApprovalServiceStub(channel)
            request = writ_pb2.DecideApprovalRequest(approval_id=approval_id, reason=reason)
            method = stub.Approve if approve else stub.Deny
            return method(request, metadata=(("authorization", f"Bearer {self.token(approver)}"),), timeout=10)

    def pending_approvals(self, task_id: str) -> list[writ_pb2.Approval]:
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = writ_pb2_grpc.ApprovalServiceStub(channel)
            response = stub.ListApprovals(
                writ_pb2.ListApprovalsRequest(task_id=task_id, state=writ_pb2.APPROVAL_STATE_PENDING),
                metadata=(("authorization", f"Bearer {self.token('approver')}"),),
                timeout=10,
            )
            return list(response.approvals)

    def approve_in_background(self, approval_id: str, delay: float = 0.3) -> threading.Thread:
        """Both approvers approve, one after the other, from another thread."""

        def run() -> None:
            time.sleep(delay)
            self.decide(approval_id, "approver", reason="refund OPS-43 checked")
            time.sleep(delay)
            self.decide(approval_id, "approver-2", reason="agreed")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        stop(self.process)


def eventually(check: Callable[[], bool], timeout: float = 10.0, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()
