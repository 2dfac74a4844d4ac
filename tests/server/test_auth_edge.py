"""Auth as identity providers issue it, and tokens that expire on open connections (issue 11,
items 4 and 6), over real sockets: RS256/ES256/EdDSA with PEM keys and JWKS (file and URL),
unusable settings refused at startup, streams ended and WebSockets closed at ``exp``, and
the WebSocket ``auth`` op presenting a fresh token without reconnecting."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from adapters.server import AuthConfig, ServerConfig, create_app

from .conftest import Server
from .test_ws import next_op

KEY = "test-secret-key-of-at-least-32-bytes!"


def private_key(algorithm: str) -> Any:
    if algorithm.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk_of(key: Any, algorithm: str, kid: str) -> dict[str, Any]:
    impl = jwt.get_algorithm_by_name(algorithm)
    jwk = json.loads(impl.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}


async def status(session: aiohttp.ClientSession, url: str, tok: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with session.get(url, headers=headers) as r:
        body = await r.json()
        return r.status, body["error"]["code"] if r.status >= 400 else body


# -- 4. algorithms identity providers issue, and JWKS -----------------------------------------
@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA", "PS256"])
async def test_asymmetric_tokens_verify_with_a_pem_key(
    make_server: Any, session: aiohttp.ClientSession, algorithm: str
) -> None:
    signer = private_key(algorithm)
    server = await make_server(auth=AuthConfig(key=public_pem(signer), algorithm=algorithm))
    url = server.url + "/poll/chat.>?timeout=0"
    good = jwt.encode({"sub": "ada", "subscribe": ["chat.>"]}, signer, algorithm=algorithm)
    assert await status(session, url, good) == (200, [])
    forged = jwt.encode({"subscribe": [">"]}, private_key(algorithm), algorithm=algorithm)
    assert await status(session, url, forged) == (401, "unauthorized")
    hs = jwt.encode({"subscribe": [">"]}, KEY, algorithm="HS256")  # the algorithm is pinned
    assert await status(session, url, hs) == (401, "unauthorized")


@pytest.fixture
async def jwks_host() -> AsyncIterator[tuple[str, dict[str, Any], list[int]]]:
    """A JWKS document served over HTTP, as an identity provider publishes it."""
    doc: dict[str, Any] = {"keys": []}
    hits: list[int] = []

    async def handler(_: web.Request) -> web.Response:
        hits.append(1)
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/.well-known/jwks.json", doc, hits
    await runner.cleanup()


async def test_keys_from_a_jwks_url_are_chosen_by_kid_and_refetched_for_a_new_one(
    make_server: Any, session: aiohttp.ClientSession, jwks_host: Any
) -> None:
    url, doc, hits = jwks_host
    rsa_key, ec_key = private_key("RS256"), private_key("ES256")
    doc["keys"] = [jwk_of(rsa_key, "RS256", "r1"), jwk_of(ec_key, "ES256", "e1")]
    auth = AuthConfig(jwks=url, algorithm=("RS256", "ES256"), jwks_cooldown=0)
    server = await make_server(auth=auth)
    poll = server.url + "/poll/a?timeout=0"
    for key, alg, kid in ((rsa_key, "RS256", "r1"), (ec_key, "ES256", "e1")):
        tok = jwt.encode({"subscribe": [">"]}, key, algorithm=alg, headers={"kid": kid})
        assert await status(session, poll, tok) == (200, [])
    assert len(hits) == 1  # cached
    rotated = private_key("RS256")  # the provider rotates its key
    doc["keys"].append(jwk_of(rotated, "RS256", "r2"))
    tok = jwt.encode({"subscribe": [">"]}, rotated, algorithm="RS256", headers={"kid": "r2"})
    assert await status(session, poll, tok) == (200, [])
    unknown = jwt.encode({"subscribe": [">"]}, rotated, algorithm="RS256", headers={"kid": "zz"})
    assert await status(session, poll, unknown) == (401, "unauthorized")
    # the WebSocket handshake too
    async with session.ws_connect(server.ws_url(f"/ws?token={tok}")) as ws:
        await ws.send_json({"op": "subscribe", "id": "s", "pattern": "a"})
        await next_op(ws, "subscribed")


async def test_keys_from_a_jwks_file(
    make_server: Any, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    key = private_key("EdDSA")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk_of(key, "EdDSA", "k1")]}))
    server = await make_server(auth=AuthConfig(jwks=str(path), algorithm="EdDSA"))
    tok = jwt.encode({"subscribe": [">"]}, key, algorithm="EdDSA", headers={"kid": "k1"})
    no_kid = jwt.encode({"subscribe": [">"]}, key, algorithm="EdDSA")  # the only key
    for t in (tok, no_kid):
        assert await status(session, server.url + "/poll/a?timeout=0", t) == (200, [])


def test_unusable_auth_settings_are_refused_at_startup(tmp_path: Path) -> None:
    pem = public_pem(private_key("RS256"))
    for kwargs, why in (
        ({"key": "a-shared-secret", "algorithm": "RS256"}, "does not fit RS256"),
        ({"key": pem, "algorithm": "HS256"}, "does not fit HS256"),
        ({"key": pem, "algorithm": "ES256"}, "does not fit ES256"),
        ({"key": KEY, "algorithm": "none"}, "not one of"),
        ({"key": KEY, "algorithm": "HS1"}, "not one of"),
        ({"key": KEY, "algorithm": ()}, "at least one"),
        ({}, "exactly one"),
        ({"key": KEY, "jwks": "https://idp.example/jwks.json"}, "exactly one"),
    ):
        with pytest.raises(ValueError, match=why):
            AuthConfig(**kwargs)
    for content in (None, "not json", '{"keys": []}'):
        path = tmp_path / "jwks.json"
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(content)
        with pytest.raises(ValueError, match=r"AuthConfig\.jwks"):
            create_app(config=ServerConfig(auth=AuthConfig(jwks=str(path), algorithm="RS256")))


# -- 6. tokens expire on open connections ------------------------------------------------------
def token(seconds: float | None = None, **claims: Any) -> str:
    claims.setdefault("sub", "ada")
    claims.setdefault("subscribe", [">"])
    claims.setdefault("publish", [">"])
    if seconds is not None:
        claims["exp"] = int(time.time() + seconds)
    return jwt.encode(claims, KEY, algorithm="HS256")


async def read_to_end(resp: aiohttp.ClientResponse, limit: float) -> bytes:
    data = b""
    async with asyncio.timeout(limit):
        while chunk := await resp.content.readany():
            data += chunk
    return data


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
async def test_a_stream_ends_when_its_token_expires(
    make_server: Any, session: aiohttp.ClientSession, accept: str
) -> None:
    server = await make_server(auth=AuthConfig(key=KEY))
    tok = token(2)
    started = time.monotonic()
    async with session.get(
        server.url + f"/events/chat.>?token={tok}", headers={"Accept": accept}
    ) as r:
        assert r.status == 200
        server.broker.publish("chat.a", {"n": 1})
        body = await read_to_end(r, 5)
    assert 1 <= time.monotonic() - started < 4
    assert b'"n":1' in body
    if accept == "text/event-stream":
        assert b"event: error\ndata: " in body
    last = [line for line in body.split(b"\n") if b'"op":"error"' in line][-1]
    err = orjson.loads(last.removeprefix(b"data: "))
    assert err["code"] == "token_expired"
    # and the same token cannot reconnect
    async with session.get(server.url + f"/events/chat.>?token={tok}") as r:
        assert r.status == 401


async def test_a_websocket_gets_token_expired_and_close_4401(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(auth=AuthConfig(key=KEY))
    async with session.ws_connect(server.ws_url(f"/ws?token={token(2)}")) as ws:
        await ws.send_json({"op": "subscribe", "id": "s", "pattern": "chat.>"})
        await next_op(ws, "subscribed")
        err = await asyncio.wait_for(next_op(ws, "error"), 5)
        assert err["code"] == "token_expired"
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4401
    assert server.broker.subscriber_count == 0


async def test_the_auth_op_renews_a_websocket_token_without_reconnecting(
    make_server: Any, session: aiohttp.ClientSession
) -> None:
    server = await make_server(auth=AuthConfig(key=KEY))
    async with session.ws_connect(server.ws_url(f"/ws?token={token(2)}")) as ws:
        await ws.send_json({"op": "subscribe", "id": "all", "pattern": "chat.>"})
        await ws.send_json({"op": "subscribe", "id": "secret", "pattern": "secret.>"})
        await next_op(ws, "subscribed")
        await next_op(ws, "subscribed")
        for bad, code in (
            ("garbage", "unauthorized"),
            (token(-10), "unauthorized"),
            (token(60, sub="eve"), "forbidden"),
        ):
            await ws.send_json({"op": "auth", "ref": "a0", "token": bad})
            err = await next_op(ws, "error")
            assert (err["code"], err["ref"]) == (code, "a0")
        await ws.send_json({"op": "auth", "ref": "a1", "token": 7})
        assert (await next_op(ws, "error"))["code"] == "bad_request"
        fresh = token(60, subscribe=["chat.>"])
        await ws.send_json({"op": "auth", "ref": "a2", "token": fresh})
        gone = await next_op(ws, "unsubscribed")
        assert gone == {"op": "unsubscribed", "id": "secret", "reason": "forbidden"}
        authed = await next_op(ws, "authed")
        assert authed["ref"] == "a2" and authed["exp"] > time.time() + 50
        await asyncio.sleep(2.5)  # past the first token's exp
        await ws.send_json({"op": "publish", "ref": "p", "subject": "chat.x", "data": 1})
        assert (await next_op(ws, "ack"))["ref"] == "p"
        event = orjson.loads(await ws.receive_str())
        event = event[0] if isinstance(event, list) else event
        assert event["data"] == 1 and event["subject"] == "chat.x"


async def test_the_auth_op_without_auth_configured_is_acknowledged(server: Server) -> None:
    async with aiohttp.ClientSession() as s, s.ws_connect(server.ws_url()) as ws:
        await ws.send_json({"op": "auth", "ref": "a", "token": "anything"})
        assert await next_op(ws, "authed") == {"op": "authed", "exp": None, "ref": "a"}


def test_an_algorithm_pyjwt_cannot_verify_here_is_refused_at_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The original defect: PyJWT without its crypto extra started, then answered every
    valid RS256 token with 401 'Algorithm not supported'. Simulated by hiding the
    asymmetric algorithms as PyJWT does without ``cryptography``."""
    pem = public_pem(private_key("RS256"))
    hmac_only = {k: v for k, v in jwt.algorithms.get_default_algorithms().items() if k[:2] == "HS"}
    monkeypatch.setattr(jwt.algorithms, "get_default_algorithms", lambda: hmac_only)
    with pytest.raises(ValueError, match=r"install PyJWT\[crypto\]"):
        AuthConfig(key=pem, algorithm="RS256")
    AuthConfig(key=KEY)  # HMAC still fine
