"""What needs no server: grants, durations, endpoints, the error mapping, token sources."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

import writ_client as writ
from writ_client import _common
from writ_client._errors import from_rpc_error


@pytest.mark.parametrize(
    ("text", "grant"),
    [
        ("tokens/orders-read", writ.Grant("tokens", "orders-read")),
        ("tokens/orders-read:orders:read", writ.Grant("tokens", "orders-read", ("orders:read",))),
        (
            "tokens/orders-read:orders:read,orders:list@5m",
            writ.Grant("tokens", "orders-read", ("orders:read", "orders:list"), timedelta(minutes=5)),
        ),
        ("pg/reader@1h30m", writ.Grant("pg", "reader", (), timedelta(hours=1, minutes=30))),
        ("pg/reader:@90s", writ.Grant("pg", "reader", (), timedelta(seconds=90))),
    ],
)
def test_grants_parse_as_the_cli_does(text: str, grant: writ.Grant) -> None:
    assert writ.Grant.parse(text) == grant
    assert writ.Grant.parse(str(grant)) == grant


def test_a_typed_grant_takes_seconds_strings_and_scopes_text() -> None:
    assert writ.Grant("p", "r", "a,b", 30).ttl == timedelta(seconds=30)
    assert writ.Grant("p", "r", ["a"], "2m") == writ.Grant("p", "r", ("a",), timedelta(minutes=2))
    assert (
        str(writ.Grant("tokens", "orders-read", ["orders:read"], timedelta(seconds=3)))
        == "tokens/orders-read:orders:read@3s"
    )


@pytest.mark.parametrize("text", ["tokens", "tokens:x", "tokens/r@5", "tokens/r@5 parsecs", "/r", "p/"])
def test_malformed_grants_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        writ.Grant.parse(text)


def test_durations() -> None:
    assert writ.parse_duration("1h 30min") == timedelta(minutes=90)
    assert writ.parse_duration("500ms") == timedelta(milliseconds=500)
    assert writ.parse_duration("2days") == timedelta(days=2)
    assert writ.format_duration(timedelta(hours=1, minutes=30, milliseconds=5)) == "1h30m5ms"


def test_endpoints() -> None:
    assert _common.parse_endpoint("http://127.0.0.1:7070") == ("127.0.0.1:7070", False)
    assert _common.parse_endpoint("https://writ.example.com") == ("writ.example.com:443", True)
    assert _common.parse_endpoint("unix:/run/writ.sock") == ("unix:/run/writ.sock", False)
    with pytest.raises(ValueError, match="http://"):
        _common.parse_endpoint("writ.example.com:7070")


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, writ.Denied, False),
        (grpc.StatusCode.UNAUTHENTICATED, writ.Unauthenticated, False),
        (grpc.StatusCode.NOT_FOUND, writ.NotFound, False),
        (grpc.StatusCode.INVALID_ARGUMENT, writ.InvalidRequest, False),
        (grpc.StatusCode.FAILED_PRECONDITION, writ.PreconditionFailed, False),
        (grpc.StatusCode.ALREADY_EXISTS, writ.AlreadyExists, False),
        (grpc.StatusCode.ABORTED, writ.Conflict, True),
        (grpc.StatusCode.UNAVAILABLE, writ.Unavailable, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, writ.ResourceExhausted, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, writ.DeadlineExceeded, True),
        (grpc.StatusCode.INTERNAL, writ.ServerError, False),
        (grpc.StatusCode.UNIMPLEMENTED, writ.ServerError, False),
    ],
)
def test_status_codes_map_to_exceptions(code: grpc.StatusCode, kind: type, retryable: bool) -> None:
    error = from_rpc_error(FakeRpcError(code, "what Writ said"))
    assert type(error) is kind
    assert isinstance(error, writ.WritError)
    assert error.retryable is retryable
    assert isinstance(error, writ.Retryable) is (retryable and kind is not writ.Conflict)
    assert str(error) == "what Writ said" and error.code is code


def test_a_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    source = writ.TokenFile(path)
    assert source() == "first" and source() == "first"
    assert source.reads == 1, "an unchanged file is not read again"
    path.write_text("second-and-longer")
    assert source() == "second-and-longer"
    assert source.reads == 2


def test_a_token_file_follows_a_kubernetes_style_symlink_swap(tmp_path: Path) -> None:
    # The kubelet writes each version into a new directory and swaps the
    # `..data` symlink atomically; the token path links through it.
    def version(name: str, token: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "token").write_text(token)
        (tmp_path / "..data_tmp").symlink_to(name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    version("..2026_01_01_v1", "token-one")
    (tmp_path / "token").symlink_to("..data/token")
    source = writ.TokenFile(tmp_path / "token")
    assert source() == "token-one"
    version("..2026_01_01_v2", "token-two")  # same length, new inode
    assert source() == "token-two"


def test_missing_tokens_say_where_they_were_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(writ.TokenUnavailable, match="cannot read the token file"):
        writ.TokenFile(tmp_path / "absent")()
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(writ.TokenUnavailable, match="is empty"):
        writ.TokenFile(tmp_path / "empty")()
    monkeypatch.delenv("WRIT_TOKEN", raising=False)
    monkeypatch.delenv("WRIT_TOKEN_FILE", raising=False)
    with pytest.raises(writ.TokenUnavailable, match="WRIT_TOKEN_FILE"):
        writ.token_source(None)()
    monkeypatch.setenv("WRIT_TOKEN", "from-env")
    assert writ.token_source(None)() == "from-env"
    (tmp_path / "t").write_text("from-file")
    monkeypatch.setenv("WRIT_TOKEN_FILE", str(tmp_path / "t"))
    assert writ.token_source(None)() == "from-file", "WRIT_TOKEN_FILE wins"
    assert isinstance(writ.token_source(tmp_path / "t"), writ.TokenFile)
    monkeypatch.setenv("MY_TOKEN", "a")
    source = writ.TokenEnv("MY_TOKEN")
    assert source() == "a"
    monkeypatch.setenv("MY_TOKEN", "b")
    assert source() == "b", "read at every call"


def test_secrets_stay_out_of_reprs() -> None:
    assert "s3cret" not in repr(writ.Password("writ_x", "s3cret", {"host": "db"}))
    assert "s3cret" not in repr(writ.BearerToken("s3cret"))
    assert "s3cret" not in repr(writ.AwsSession("AKIA", "s3cret", "s3cret"))
    assert "s3cret" not in repr(writ.StaticToken("s3cret"))
