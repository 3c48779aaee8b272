"""auth.mode = jwt with python-socketio and tokens minted by PyJWT: HS256 with
a configured secret; RS256, ES256 and EdDSA with keys published in a JWKS that
a local HTTP server of this test serves. A refused connection reports
`unauthorized: <reason>` to the client's `connect_error` handler."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import socketio
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from conftest import EVENT_TIMEOUT_S, close
from launcher import Launch

SECRET = "python-secret-0123456789abcdef0123456789"
AUDIENCE = "ecos-python"

KEYS = {
    "RS256": (rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm, "py-rsa"),
    "ES256": (ec.generate_private_key(ec.SECP256R1()), ECAlgorithm, "py-ec"),
    "EdDSA": (ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm, "py-ed"),
}


def jwks_document() -> bytes:
    keys = []
    for alg, (private, algorithm, kid) in KEYS.items():
        key = json.loads(algorithm.to_jwk(private.public_key()))
        key.update(kid=kid, alg=alg, use="sig")
        keys.append(key)
    return json.dumps({"keys": keys}).encode()


class JwksHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        body = jwks_document()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def server():
    provider = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    thread = threading.Thread(target=provider.serve_forever, daemon=True)
    thread.start()
    env = {
        "ECOS_AUTH__MODE": "jwt",
        "ECOS_AUTH__JWT__SECRETS": SECRET,
        "ECOS_AUTH__JWT__JWKS_URL": f"http://127.0.0.1:{provider.server_address[1]}/jwks.json",
        "ECOS_AUTH__JWT__AUDIENCE": AUDIENCE,
    }
    try:
        with Launch(["py-auth"], env) as launch:
            yield launch.servers[0]
    finally:
        provider.shutdown()


def token(alg: str, **claims) -> str:
    payload = {"sub": "alice", "rooms": ["team:42"], "aud": AUDIENCE, "exp": int(time.time()) + 600}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    if alg.startswith("HS"):
        return jwt.encode(payload, SECRET, algorithm=alg)
    private, _, kid = KEYS[alg]
    return jwt.encode(payload, private, algorithm=alg, headers={"kid": kid})


async def attempt(server, auth, transport="websocket"):
    """Connects with `auth`; returns (client, welcome) or (None, connect_error message)."""
    sio = socketio.AsyncClient(reconnection=False)
    welcome: asyncio.Queue = asyncio.Queue()
    refusal: asyncio.Queue = asyncio.Queue()
    sio.on("welcome", lambda data: welcome.put_nowait(data))
    sio.on("connect_error", lambda data: refusal.put_nowait(data))
    try:
        await sio.connect(server.url, transports=[transport], auth=auth, wait_timeout=EVENT_TIMEOUT_S)
    except socketio.exceptions.ConnectionError:
        data = await asyncio.wait_for(refusal.get(), EVENT_TIMEOUT_S)
        await close(sio)
        return None, data.get("message") if isinstance(data, dict) else data
    return sio, await asyncio.wait_for(welcome.get(), EVENT_TIMEOUT_S)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256", "EdDSA"])
async def test_pyjwt_tokens_of_every_family_are_accepted(server, alg, transport):
    sio, welcome = await attempt(server, {"token": token(alg, sub=f"py-{alg}")}, transport)
    try:
        assert sio is not None, f"refused: {welcome}"
        assert welcome == {"id": sio.get_sid("/"), "instance": server.id, "user": f"py-{alg}"}
        assert await sio.call("join", "team:42", timeout=EVENT_TIMEOUT_S) == {"ok": True, "room": "team:42"}
        assert await sio.call("join", "team:7", timeout=EVENT_TIMEOUT_S) == {"ok": False, "error": "forbidden"}
    finally:
        if sio:
            await close(sio)


@pytest.mark.parametrize(
    "auth, message",
    [
        ({}, "unauthorized: missing token"),
        ({"token": "garbage"}, "unauthorized: malformed token"),
        ({"token": token("HS256", exp=int(time.time()) - 3600)}, "unauthorized: expired"),
        ({"token": token("HS256", aud="another-app")}, "unauthorized: wrong audience"),
        ({"token": jwt.encode({"sub": "x", "aud": AUDIENCE, "exp": int(time.time()) + 60}, "not-the-secret-0123456789abcdef", algorithm="HS256")}, "unauthorized: bad signature"),
        ({"token": jwt.encode({"sub": "x", "aud": AUDIENCE, "exp": int(time.time()) + 60}, KEYS["ES256"][0], algorithm="ES256", headers={"kid": "nobody"})}, "unauthorized: unknown key"),
    ],
    ids=["missing", "malformed", "expired", "audience", "signature", "unknown-kid"],
)
async def test_refusals_reach_the_connect_error_handler(server, auth, message):
    sio, seen = await attempt(server, auth)
    assert sio is None, "should have been refused"
    assert seen == message
