#!/usr/bin/env python3
"""An agent that reads orders from PostgreSQL with a login Writ makes for
its task, and that no longer exists once the task is closed.

It is configured the way a workload is:

    WRIT_ENDPOINT    where Writ listens (http://127.0.0.1:7070)
    WRIT_TOKEN_FILE  its workload identity token (a Kubernetes projected
                     service-account token, re-read when rotated); or
    WRIT_TOKEN       the token itself
    WRIT_TASK_ID     the task its workflow engine opened for it

    python agent.py                          # read the orders, give the login back
    python agent.py --until-revoked 60       # keep working until Writ ends the login

With ``--until-revoked``, the agent keeps querying (as a long-running agent
would) until its session is ended, which happens when the workflow engine
closes the task; then it checks that the same login cannot connect again.
Exit status 0 means it saw exactly that.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import pg8000.native

import writ_client as writ

TOOL = "orders.report"
GRANT = "orders-db/reader"


def connect(login: writ.Password) -> pg8000.native.Connection:
    """A session with the credential Writ issued, where it says to connect."""
    return pg8000.native.Connection(
        user=login.username,
        password=login.password,
        host=login.connection.get("host", "127.0.0.1"),
        port=int(login.connection.get("port", "5432")),
        database=login.connection["dbname"],
        timeout=10,
    )


def say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--until-revoked",
        type=float,
        metavar="SECONDS",
        help="keep working until Writ ends the session (at most this long), then check the login is gone",
    )
    args = parser.parse_args()
    task_id = os.environ["WRIT_TASK_ID"]

    try:
        with writ.lease(task_id, TOOL, GRANT) as lease:
            login = lease.password
            session = connect(login)
            rows = session.run("SELECT id, customer, total FROM app.orders ORDER BY id")
            total = sum(row[2] for row in rows)
            say(f"connected as {login.username} (lease {lease.lease_id}, expires {lease.expires_at:%H:%M:%S})")
            say(f"read {len(rows)} orders, {total} in total")
            if args.until_revoked is None:
                session.close()
                return 0
            return work_until_revoked(session, login, args.until_revoked)
    except writ.Denied as error:
        say(f"Writ refused: {error}")
        return 2
    except writ.Retryable as error:
        say(f"Writ is unavailable, try again later: {error}")
        return 3


def work_until_revoked(session: pg8000.native.Connection, login: writ.Password, seconds: float) -> int:
    say("working until the task is closed ...")
    deadline = time.monotonic() + seconds
    while True:
        try:
            session.run("SELECT count(*) FROM app.orders")
        except Exception as error:  # the server ended the session
            say(f"the session was ended: {describe(error)}")
            break
        if time.monotonic() > deadline:
            say(f"still connected after {seconds:g}s: the login was not revoked")
            return 1
        time.sleep(0.2)
    try:
        connect(login).close()
    except Exception as error:
        say(f"the login is gone: {describe(error)}")
        return 0
    say("the login still works after the task was closed")
    return 1


def describe(error: Exception) -> str:
    if isinstance(error, pg8000.exceptions.DatabaseError) and error.args and isinstance(error.args[0], dict):
        fields = error.args[0]
        return f"{fields.get('M', error)} (SQLSTATE {fields.get('C', '?')})"
    return f"{type(error).__name__}: {error}"


if __name__ == "__main__":
    sys.exit(main())
