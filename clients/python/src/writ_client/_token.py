"""Where the agent's workload token comes from.

Writ recognises an agent by its workload identity token (an OIDC JWT: a
Kubernetes projected service-account token, a SPIFFE JWT-SVID, a CI OIDC
token). Such tokens rotate, so the client asks its source for the token
before every call:

* :class:`TokenFile` reads a file and reads it again whenever it changes
  (the kubelet rotates a projected token by swapping a symlink; the file's
  identity, size and modification time tell).
* :class:`TokenEnv` reads an environment variable at each call.
* Any callable returning the token (for the asyncio client it may also be
  a coroutine function).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Union

from ._errors import TokenUnavailable

__all__ = [
    "ENV_ENDPOINT",
    "ENV_TOKEN",
    "ENV_TOKEN_FILE",
    "StaticToken",
    "TokenEnv",
    "TokenFile",
    "TokenSource",
    "token_source",
]

#: The environment variables the client reads when it is given no token
#: source or endpoint; the same names the ``writ`` CLI uses.
ENV_ENDPOINT = "WRIT_ENDPOINT"
ENV_TOKEN = "WRIT_TOKEN"
ENV_TOKEN_FILE = "WRIT_TOKEN_FILE"

#: Something that returns the current token when called.
TokenSource = Callable[[], str] | Callable[[], Awaitable[str]]


def _clean(token: str, where: str) -> str:
    token = token.strip()
    if not token:
        raise TokenUnavailable(f"{where} is empty: no workload token to send")
    return token


class TokenFile:
    """A token kept in a file, e.g. a Kubernetes projected service-account
    token (``/var/run/secrets/tokens/writ``).

    The file is read on first use and again whenever it changes (its inode,
    device, size or modification time), and at least every ``max_age``
    seconds; otherwise the token read last is reused, so a call costs one
    ``stat``.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_age: float = 60.0) -> None:
        self.path = Path(path)
        self.max_age = max_age
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int, int] | None = None
        self._read_at = 0.0
        self._token: str | None = None
        #: How many times the file was read (for tests and diagnostics).
        self.reads = 0

    def __call__(self) -> str:
        try:
            info = os.stat(self.path)
        except OSError as error:
            raise TokenUnavailable(f"cannot read the token file {self.path}: {error.strerror or error}") from error
        seen = (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns)
        with self._lock:
            now = time.monotonic()
            if seen != self._seen or self._token is None or now - self._read_at >= self.max_age:
                try:
                    text = self.path.read_text(encoding="utf-8")
                except OSError as error:
                    raise TokenUnavailable(
                        f"cannot read the token file {self.path}: {error.strerror or error}"
                    ) from error
                self._token = _clean(text, f"the token file {self.path}")
                self._seen = seen
                self._read_at = now
                self.reads += 1
            return self._token

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"


class TokenEnv:
    """A token in an environment variable, read at every call."""

    def __init__(self, name: str = ENV_TOKEN) -> None:
        self.name = name

    def __call__(self) -> str:
        value = os.environ.get(self.name)
        if value is None:
            raise TokenUnavailable(f"the environment variable {self.name} is not set: no workload token to send")
        return _clean(value, f"the environment variable {self.name}")

    def __repr__(self) -> str:
        return f"TokenEnv({self.name!r})"


class StaticToken:
    """One fixed token (for short scripts and tests; real workload tokens
    expire, so prefer a file or a callable)."""

    def __init__(self, token: str) -> None:
        self._token = _clean(token, "the token given")

    def __call__(self) -> str:
        return self._token

    def __repr__(self) -> str:
        return "StaticToken(<hidden>)"


TokenLike = Union[str, "os.PathLike[str]", TokenSource, None]


def token_source(token: TokenLike) -> TokenSource:
    """The token source for a client's ``token`` argument.

    * ``None``: from the environment, ``WRIT_TOKEN_FILE`` (a path) if set,
      else ``WRIT_TOKEN`` (the token itself), looked up at each call;
    * a ``str``: the token itself;
    * a ``pathlib.Path`` (or any ``os.PathLike``): a :class:`TokenFile`;
    * a callable: called before each call.
    """
    if token is None:
        return _FromEnvironment()
    if isinstance(token, str):
        return StaticToken(token)
    if isinstance(token, os.PathLike):
        return TokenFile(token)
    if callable(token):
        return token
    raise TypeError(f"token must be a string, a path or a callable, not {type(token).__name__}")


class _FromEnvironment:
    """``WRIT_TOKEN_FILE`` if set, else ``WRIT_TOKEN``; decided at each call
    so that a file source keeps its cache while the variable stays the same."""

    def __init__(self) -> None:
        self._file: TokenFile | None = None

    def __call__(self) -> str:
        path = os.environ.get(ENV_TOKEN_FILE)
        if path:
            if self._file is None or str(self._file.path) != path:
                self._file = TokenFile(path)
            return self._file()
        if os.environ.get(ENV_TOKEN) is not None:
            return TokenEnv(ENV_TOKEN)()
        raise TokenUnavailable(
            f"no workload token: pass token= to the client, or set {ENV_TOKEN_FILE} (a file holding the token) "
            f"or {ENV_TOKEN}"
        )

    def __repr__(self) -> str:
        return f"<token from ${ENV_TOKEN_FILE} or ${ENV_TOKEN}>"
