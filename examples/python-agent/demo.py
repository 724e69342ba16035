#!/usr/bin/env python3
"""The whole example on one machine: a database, Writ, a workflow engine
and the agent, from start to revocation.

    python examples/python-agent/demo.py [--writ PATH] [--pg-host H] [--pg-port P] [--pg-user U]

Needs the `writ` binary (``--writ``, ``$WRIT_BIN`` or on ``PATH``), a
PostgreSQL 14+ server where ``--pg-user`` (default ``postgres``, password
from ``$PGPASSWORD``) is a superuser, and ``pip install ./clients/python
pg8000``.

1. Makes a throw-away database ``writ_demo_<id>`` with a table of orders,
   and an admin role for Writ that may create roles and pass on SELECT
   (no superuser), as docs/providers/postgres.md asks.
2. Runs ``writ dev`` for its development issuer (the workload tokens of the
   agent and the workflow engine), and ``writ serve`` with ``writ.toml``
   and ``policies/`` from this directory: a ``postgres`` provider
   ``orders-db`` whose role ``reader`` may read the orders.
3. As the workflow engine, opens a task for ``demo-agent``.
4. Runs ``agent.py``: it asks Writ for a login, reads the orders and keeps
   working.
5. As the workflow engine, closes the task. Writ ends the agent's session
   and drops its login; the agent sees both and exits 0.
6. Checks from outside that the login no longer exists, and cleans up
   everything it made (``--keep`` keeps the files).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pg8000.native

import writ_client as writ

HERE = Path(__file__).resolve().parent


def say(line: str) -> None:
    print(f"demo: {line}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args[1]} exited with {process.returncode}; see {log}:\n{log.read_text()[-3000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s; see {log}")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Database:
    """The throw-away database and Writ's admin role on the server."""

    def __init__(self, host: str, port: int, user: str, password: str | None) -> None:
        self.server = dict(host=host, port=port, user=user, password=password)
        suffix = uuid.uuid4().hex[:12]
        self.name = f"writ_demo_{suffix}"
        self.admin = f"writ_demo_admin_{suffix}"
        self.admin_password = secrets.token_urlsafe(24)
        self.made = False

    def superuser(self, database: str = "postgres") -> pg8000.native.Connection:
        return pg8000.native.Connection(database=database, timeout=30, **self.server)  # type: ignore[arg-type]

    def create(self) -> None:
        admin, name = self.admin, self.name
        server = self.superuser()
        try:
            server.run(f"CREATE ROLE \"{admin}\" LOGIN CREATEROLE PASSWORD '{self.admin_password}'")
            self.made = True
            server.run(f'CREATE DATABASE "{name}"')
        finally:
            server.close()
        db = self.superuser(name)
        try:
            for statement in (
                "CREATE SCHEMA app",
                "CREATE TABLE app.orders (id int PRIMARY KEY, customer text NOT NULL, total int NOT NULL)",
                "INSERT INTO app.orders VALUES (1, 'ada', 120), (2, 'grace', 80), (3, 'edsger', 45)",
                f'REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC',
                f'GRANT CONNECT ON DATABASE "{name}" TO "{admin}" WITH GRANT OPTION',
                f'GRANT USAGE ON SCHEMA app TO "{admin}" WITH GRANT OPTION',
                f'GRANT SELECT ON ALL TABLES IN SCHEMA app TO "{admin}" WITH GRANT OPTION',
            ):
                db.run(statement)
        finally:
            db.close()

    def admin_connection(self) -> str:
        return f"host={self.server['host']} port={self.server['port']} user={self.admin} dbname={self.name}"

    def role_exists(self, role: str) -> bool:
        server = self.superuser()
        try:
            return bool(server.run("SELECT 1 FROM pg_roles WHERE rolname = :role", role=role))
        finally:
            server.close()

    def drop(self) -> None:
        """Drops the database, the group roles Writ made for it, any login
        left behind (only if something failed), and the admin role."""
        if not self.made:
            return
        server = self.superuser()
        try:
            groups = [
                row[0]
                for row in server.run(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE 'writ\\_g\\_%' "
                    "AND strpos(shobj_description(oid, 'pg_authid'), :db) > 0",
                    db=f'database "{self.name}"',
                )
            ]
            logins = (
                [
                    row[0]
                    for row in server.run(
                        "SELECT DISTINCT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                        "JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = ANY(:groups)",
                        groups=groups,
                    )
                ]
                if groups
                else []
            )
            server.run(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            for role in logins + groups + [self.admin]:
                server.run(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writ", default=os.environ.get("WRIT_BIN") or shutil.which("writ"), help="the writ binary")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres", help="a superuser, to make the database and admin role")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    if not args.writ:
        parser.error("no writ binary: pass --writ, set WRIT_BIN, or put writ on PATH (cargo build --bin writ)")

    work = Path(tempfile.mkdtemp(prefix="writ-python-agent-"))
    db = Database(args.pg_host, args.pg_port, args.pg_user, os.environ.get("PGPASSWORD"))
    dev: subprocess.Popen[bytes] | None = None
    server: subprocess.Popen[bytes] | None = None
    try:
        db.create()
        say(f"database {db.name} with 3 orders; Writ's admin role {db.admin} (CREATEROLE, no superuser)")

        # The development issuer: `writ dev` serves it (and a Writ of its own,
        # unused here); `writ token` signs workload tokens with its key.
        dev_dir = work / "dev"
        issuer_listen = f"127.0.0.1:{free_port()}"
        dev_log = work / "writ-dev.log"
        with open(dev_log, "wb") as log:
            dev = subprocess.Popen(
                [
                    args.writ,
                    "dev",
                    "--data-dir",
                    str(dev_dir),
                    "--listen",
                    f"127.0.0.1:{free_port()}",
                    "--http-listen",
                    f"127.0.0.1:{free_port()}",
                    "--issuer-listen",
                    issuer_listen,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(int(issuer_listen.rsplit(":", 1)[1]), dev, dev_log)

        def token(who: str) -> str:
            return subprocess.run(
                [args.writ, "token", "--data-dir", str(dev_dir), "--issuer-listen", issuer_listen, who],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()

        # The Writ of this example, from writ.toml and policies/ beside this file.
        config_dir = work / "writ"
        shutil.copytree(HERE / "policies", config_dir / "policies")
        for key in ("sealing-1.key", "audit.key"):
            (config_dir / key).write_bytes(secrets.token_bytes(32))
            (config_dir / key).chmod(0o600)
        (config_dir / "pg-admin.password").write_text(db.admin_password)
        (config_dir / "pg-admin.password").chmod(0o600)
        grpc_port, http_port = free_port(), free_port()
        config = string.Template((HERE / "writ.toml").read_text()).substitute(
            listen=f"127.0.0.1:{grpc_port}",
            http_listen=f"127.0.0.1:{http_port}",
            issuer=f"http://{issuer_listen}",
            admin_connection=db.admin_connection(),
            database=db.name,
        )
        (config_dir / "writ.toml").write_text(config)
        server_log = work / "writ.log"
        with open(server_log, "wb") as log:
            server = subprocess.Popen(
                [args.writ, "serve", "-c", str(config_dir / "writ.toml")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(grpc_port, server, server_log)
        endpoint = f"http://127.0.0.1:{grpc_port}"
        say(f"writ serving on {endpoint} with provider orders-db (postgres)")

        # The workflow engine opens a task for the agent.
        task_id = f"orders-report-{uuid.uuid4().hex[:8]}"
        tasks = writ.TaskClient(endpoint, token=token("workflow"))
        tasks.start(task_id, "demo-agent", purpose="nightly orders report", environment="dev", deadline_in=600)
        say(f"workflow engine opened task {task_id}")

        # The agent, with its workload token in a file, as in a pod.
        token_file = work / "agent-token"
        token_file.write_text(token("agent"))
        agent = subprocess.Popen(
            [sys.executable, str(HERE / "agent.py"), "--until-revoked", "60"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "WRIT_ENDPOINT": endpoint, "WRIT_TOKEN_FILE": str(token_file), "WRIT_TASK_ID": task_id},
        )
        assert agent.stdout is not None
        username = None
        for line in agent.stdout:
            print(f"agent: {line}", end="", flush=True)
            if line.startswith("connected as "):
                username = line.split()[2]
            if line.startswith("working until"):
                break
        else:
            say(f"the agent stopped early (exit {agent.wait()})")
            return 1
        assert username is not None
        say(f"login {username} exists: {db.role_exists(username)}")

        closed = tasks.close_task(task_id)
        say(f"workflow engine closed the task: {closed.revoked} lease(s) revoked, {closed.retrying} retrying")
        for line in agent.stdout:
            print(f"agent: {line}", end="", flush=True)
        code = agent.wait(timeout=60)
        gone = not db.role_exists(username)
        say(f"agent exited {code}; login {username} exists: {not gone}")
        tasks.close()
        if code != 0 or not gone:
            return 1
        say("ok: the credential lived exactly as long as the task")
        return 0
    finally:
        stop(server)
        stop(dev)
        try:
            db.drop()
        except Exception as error:  # report, but do not hide the outcome
            say(f"cleanup of {db.name} failed: {error}")
        if args.keep:
            say(f"files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
