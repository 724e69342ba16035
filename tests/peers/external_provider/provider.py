"""An example Writ external provider: an in-memory API-key service.

It speaks writ.provider.v1.ProviderPlugin (proto/writ/provider/v1/provider.proto)
and offers one role, `reports-read` with scope `reports:read`. Minted keys are
random bearer tokens kept in memory with their expiry; revoke deletes them.
The Rust tests of writ-provider-external run Writ's conformance suite
against it, using the optional Introspect RPC as the probe.

Usage:
    python3 provider.py [PORT | unix:/path.sock] [--token-file FILE]
                        [--proto-dir DIR] [--exit-on-stdin-eof]

PORT 0 (the default) picks a free port. Once serving, one JSON line
{"port": N} (or {"unix": "/path"}) is printed to stdout. Stubs are generated
at start into a temporary directory with grpc_tools.protoc, so no generated
code is kept in the repository.
"""

import argparse
import datetime as dt
import hmac
import importlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
import grpc_tools
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))
PROTO = "writ/provider/v1/provider.proto"

ROLE = "reports-read"
SCOPES = ["reports:read"]
MAX_TTL_SECONDS = 3600
DEFAULT_TTL_SECONDS = 900
# The handle is derived from the lease alone, so Writ can revoke a lease
# whose mint it never saw complete.
INTENT_TEMPLATE = "apikey_{lease_hex}"


def generate_stubs(proto_dir):
    """Compiles the protocol into a temporary directory and imports it."""
    out = tempfile.mkdtemp(prefix="writ-provider-stubs-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    status = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(proto_dir, PROTO),
    ])
    if status != 0:
        sys.exit(f"protoc failed with status {status}")
    sys.path.insert(0, out)
    pb2 = importlib.import_module("writ.provider.v1.provider_pb2")
    pb2_grpc = importlib.import_module("writ.provider.v1.provider_pb2_grpc")
    # Both modules are loaded; the generated files are no longer needed.
    shutil.rmtree(out, ignore_errors=True)
    return pb2, pb2_grpc


def intent(lease_id):
    return INTENT_TEMPLATE.replace("{lease_hex}", lease_id.replace("-", ""))


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


def build_servicer(pb2, pb2_grpc, token, journal=None, revoke_delay=0.0, refuse_revoke=False,
                   mint_delay=0.0):
    class ApiKeyProvider(pb2_grpc.ProviderPluginServicer):
        def __init__(self):
            # handle -> (api key, expiry); api key -> handle. One lock: the
            # server runs calls on a thread pool.
            self.lock = threading.Lock()
            self.by_handle = {}
            self.by_key = {}

        def _authorize(self, context):
            if token is None:
                return
            sent = dict(context.invocation_metadata()).get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        def _check_grant(self, request, context):
            if request.role != ROLE:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'unknown role "{request.role}"')
            for scope in request.scopes:
                if scope not in SCOPES:
                    context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f'role "{ROLE}" does not offer scope "{scope}"',
                    )
            if not request.HasField("expires_at"):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expires_at is required")
            expires_at = request.expires_at.ToDatetime(tzinfo=dt.timezone.utc)
            if expires_at <= utcnow():
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expires_at is in the past")
            # Never mint past the role's limit, nor past what Writ asked.
            return min(expires_at, utcnow() + dt.timedelta(seconds=MAX_TTL_SECONDS))

        def Describe(self, request, context):
            self._authorize(context)
            role = pb2.Role(name=ROLE, scopes=SCOPES)
            role.max_ttl.FromSeconds(MAX_TTL_SECONDS)
            role.default_ttl.FromSeconds(DEFAULT_TTL_SECONDS)
            role.min_ttl.FromSeconds(1)
            return pb2.DescribeResponse(
                name="api-key",
                shape=pb2.SHAPE_REVOCABLE,
                roles=[role],
                intent_template=INTENT_TEMPLATE,
            )

        def Intent(self, request, context):
            self._authorize(context)
            if request.role != ROLE:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'unknown role "{request.role}"')
            return pb2.IntentResponse(revocation_handle=intent(request.lease_id))

        def Mint(self, request, context):
            self._authorize(context)
            expires_at = self._check_grant(request, context)
            if mint_delay:
                # A slow backend, so that tests can act while a mint is under way.
                time.sleep(mint_delay)
            handle = intent(request.lease_id)
            key = "rk_" + secrets.token_urlsafe(32)
            with self.lock:
                self.by_handle[handle] = (key, expires_at)
                self.by_key[key] = handle
                # The provider's own truth, for tests that count what was
                # minted against what Writ tracks.
                if journal is not None:
                    journal.write(f"minted {handle}\n")
                    journal.flush()
            response = pb2.MintResponse(
                credential=pb2.Credential(bearer_token=pb2.BearerToken(token=key, token_type="Bearer")),
                revocation_handle=handle,
            )
            response.expires_at.FromDatetime(expires_at)
            return response

        def Renew(self, request, context):
            self._authorize(context)
            expires_at = self._check_grant(request.mint, context)
            with self.lock:
                entry = self.by_handle.get(request.revocation_handle)
                if entry is None or entry[1] <= utcnow():
                    context.abort(grpc.StatusCode.NOT_FOUND, "no live key for this lease")
                self.by_handle[request.revocation_handle] = (entry[0], expires_at)
            response = pb2.RenewResponse()
            response.expires_at.FromDatetime(expires_at)
            return response

        def Revoke(self, request, context):
            self._authorize(context)
            if revoke_delay:
                # A slow backend, so that tests can stop Writ mid-revocation.
                time.sleep(revoke_delay)
            if refuse_revoke:
                # A backend that will never take this key back (for tests of
                # revocations that cannot succeed).
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this key is pinned and cannot be revoked")
            with self.lock:
                entry = self.by_handle.pop(request.revocation_handle, None)
                if entry is not None:
                    self.by_key.pop(entry[0], None)
                if journal is not None:
                    # "revoked" only when a live key was taken back; a repeated
                    # (idempotent) revocation is journaled as a no-op.
                    outcome = "revoked" if entry is not None else "revoke-noop"
                    journal.write(f"{outcome} {request.revocation_handle}\n")
                    journal.flush()
            return pb2.RevokeResponse()

        def Health(self, request, context):
            self._authorize(context)
            return pb2.HealthResponse()

        def Introspect(self, request, context):
            self._authorize(context)
            if request.credential.WhichOneof("kind") != "bearer_token":
                return pb2.IntrospectResponse(active=False)
            key = request.credential.bearer_token.token
            with self.lock:
                handle = self.by_key.get(key)
                entry = self.by_handle.get(handle) if handle is not None else None
            active = entry is not None and entry[1] > utcnow()
            return pb2.IntrospectResponse(active=active)

    return ApiKeyProvider()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("listen", nargs="?", default="0", help="port (0 = free) or unix:/path")
    parser.add_argument("--token-file", help="require this bearer token on every call")
    parser.add_argument("--journal", help="append a line per mint and revocation to this file")
    parser.add_argument("--revoke-delay-ms", type=int, default=0,
                        help="sleep this long in every Revoke (a slow backend, for tests)")
    parser.add_argument("--mint-delay-ms", type=int, default=0,
                        help="sleep this long in every Mint (a slow backend, for tests)")
    parser.add_argument("--refuse-revoke", action="store_true",
                        help="refuse every Revoke with FAILED_PRECONDITION (a revocation that can never succeed)")
    parser.add_argument("--proto-dir", default=os.environ.get("WRIT_PROTO_DIR", DEFAULT_PROTO_DIR))
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="stop when stdin closes (so a test's plugin dies with the test)")
    args = parser.parse_args()

    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()

    pb2, pb2_grpc = generate_stubs(args.proto_dir)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb2_grpc.add_ProviderPluginServicer_to_server(build_servicer(pb2, pb2_grpc, token, open(args.journal, "a") if args.journal else None,
                       args.revoke_delay_ms / 1000.0, args.refuse_revoke,
                       args.mint_delay_ms / 1000.0), server)
    if args.listen.startswith("unix:"):
        server.add_insecure_port(args.listen)
        ready = {"unix": args.listen[len("unix:"):]}
    else:
        port = server.add_insecure_port(f"127.0.0.1:{int(args.listen)}")
        if port == 0:
            sys.exit(f"cannot listen on 127.0.0.1:{args.listen}")
        ready = {"port": port}
    server.start()
    print(json.dumps(ready), flush=True)

    if args.exit_on_stdin_eof:
        def watch_stdin():
            sys.stdin.read()
            server.stop(grace=None)
        threading.Thread(target=watch_stdin, daemon=True).start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
