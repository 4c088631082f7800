"""app.relay without Ray: a request carried whole through an ASGI app, and what is sent again when
the replica holding it dies."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from app.errors import install_error_handlers
from app.relay import ATTEMPTS, ATTEMPTS_HEADER, Relayed, ReplicaLost, Reply, relay, relay_http, run_asgi


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.api_route("/echo/{name}", methods=["GET", "POST"])
    async def echo(name: str, request: Request) -> dict[str, object]:
        return {
            "name": name,
            "method": request.method,
            "query": dict(request.query_params),
            "body": (await request.body()).decode(),
            "header": request.headers.get("x-thing"),
            "client": request.client.host if request.client else None,
        }

    return app


def request(method: str = "POST", path: str = "/recommend", body: bytes = b"photo") -> Relayed:
    return Relayed(method, path, path.encode(), b"k=1", [(b"x-thing", b"yes")], body, ("10.0.0.7", 5000))


def test_a_relayed_request_reaches_the_app_whole() -> None:
    carried = Relayed("POST", "/echo/a b", b"/echo/a%20b", b"k=1", [(b"x-thing", b"yes")], b"the body", ("10.0.0.7", 1))
    reply = asyncio.run(run_asgi(echo_app(), carried))
    assert reply.status == 200
    assert dict(reply.headers)[b"content-type"] == b"application/json"
    body = reply.body.decode()
    for part in ('"name":"a b"', '"method":"POST"', '"query":{"k":"1"}', '"body":"the body"', '"header":"yes"'):
        assert part in body
    assert '"client":"10.0.0.7"' in body


class Replicas:
    """Replicas of which the first ``dying`` die holding the request."""

    def __init__(self, dying: int) -> None:
        self.dying, self.calls = dying, 0

    async def send(self, request: Relayed) -> Reply:
        self.calls += 1
        if self.calls <= self.dying:
            raise ReplicaLost("ActorDiedError")
        return Reply(200, [(b"content-type", b"text/plain"), (b"content-length", b"2")], b"ok")


def test_a_recommendation_whose_replica_died_is_answered_by_another() -> None:
    replicas = Replicas(dying=1)
    response = asyncio.run(relay(request(), replicas.send))
    assert (response.status_code, response.body, replicas.calls) == (200, b"ok", 2)
    assert response.headers[ATTEMPTS_HEADER] == "2"
    assert response.headers["content-length"] == "2"  # the app's headers, not doubled


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_reads_are_sent_again(method: str) -> None:
    replicas = Replicas(dying=1)
    assert asyncio.run(relay(request(method, "/health"), replicas.send)).status_code == 200


def test_a_change_whose_replica_died_is_not_sent_again_but_answered_503() -> None:
    replicas = Replicas(dying=1)
    response = asyncio.run(relay(request("POST", "/admin/reindex"), replicas.send))
    assert replicas.calls == 1
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert b'"code":"replica_lost"' in response.body and b"may run it twice" in response.body


def test_attempts_end_in_503_when_every_replica_dies() -> None:
    replicas = Replicas(dying=ATTEMPTS)
    response = asyncio.run(relay(request(), replicas.send))
    assert (response.status_code, replicas.calls) == (503, ATTEMPTS)
    assert response.headers["Retry-After"] == "1"


def test_the_ingress_refuses_a_body_over_the_limit_with_the_apps_413() -> None:
    replicas = Replicas(dying=0)
    ingress = FastAPI()

    @ingress.post("/recommend")
    async def entry(http: Request) -> object:
        return await relay_http(http, 10, replicas.send)

    with TestClient(ingress) as client:
        too_big = client.post("/recommend", content=b"x" * 11)
        fits = client.post("/recommend", content=b"x" * 10)
    assert too_big.status_code == 413 and too_big.json()["code"] == "too_large"
    assert replicas.calls == 1 and fits.status_code == 200


def test_a_route_prefix_is_kept_and_does_not_hide_a_recommendation() -> None:
    prefixed = Relayed("POST", "/shop/recommend", b"/shop/recommend", b"", [], b"", None, root_path="/shop")
    assert prefixed.route == "/recommend" and prefixed.repeatable
    app = FastAPI()

    @app.get("/where")
    async def where(request: Request) -> dict[str, str]:
        return {"url": str(request.url_for("where")), "root": request.scope["root_path"]}

    carried = Relayed(
        "GET", "/shop/where", b"/shop/where", b"", [(b"host", b"shop.example")], b"", None, "/shop", "https"
    )
    reply = asyncio.run(run_asgi(app, carried))
    assert reply.status == 200, reply.body
    assert b'"url":"https://shop.example/shop/where"' in reply.body and b'"root":"/shop"' in reply.body


def test_an_app_error_keeps_the_apps_own_500() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    reply = asyncio.run(run_asgi(app, Relayed("GET", "/broken", b"/broken", b"", [], b"", None)))
    assert reply.status == 500 and b'"code":"internal_error"' in reply.body
