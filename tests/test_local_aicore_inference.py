"""The local AI Core's inference proxy (labkit.local.aicore.inference): 64 concurrent streams
chunk by chunk, and its token, resource group and deployment checks."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aicore_emulator
import httpx
from aicore_emulator import (
    EXECUTABLE,
    SCENARIO,
    WAIT_S,
    Emulator,
    wait_for,
)

from labkit.local.aicore.runspec import RunSpec
from labkit.util.net import free_port

# The fixtures of tests/aicore_emulator.py this file uses.
emulator = aicore_emulator.emulator


class GatedUpstream:
    """A server that streams ``first`` to every request, then waits until the test says that
    all clients have it before it streams ``second``: a proxy that buffers, or that serves
    fewer streams at once than there are clients, makes it time out and send ``timeout``."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.responses import StreamingResponse
        from starlette.routing import Route

        self.release = threading.Event()
        self.seen_headers: list[dict[str, str]] = []

        async def stream(request: Any) -> Any:
            self.seen_headers.append(dict(request.headers))
            body = await request.body()

            async def chunks() -> Any:
                yield b"data: first " + body + b"\n\n"
                for _ in range(int(WAIT_S * 20)):
                    if self.release.is_set():
                        yield b"data: second\n\n"
                        return
                    await asyncio.sleep(0.05)
                yield b"data: timeout\n\n"

            return StreamingResponse(
                chunks(), media_type="text/event-stream", headers={"X-Upstream": "yes"}
            )

        self.app = Starlette(routes=[Route("/v1/stream", stream, methods=["POST"])])
        self.port = free_port()

    def __enter__(self) -> GatedUpstream:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, "the upstream")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.should_exit = True
        self.thread.join(30)


def fake_running(emu: Emulator, dep_id: str, port: int, request_timeout: float = 300.0) -> None:
    spec = RunSpec(image="x", env={}, container_port=8080, request_timeout=request_timeout)
    with emu.core.store.lock:
        emu.core.store.in_group("deployments", "default")[dep_id] = {
            "id": dep_id, "status": "RUNNING", "targetStatus": "RUNNING", "deploymentUrl": "",
            "configurationId": "c0000000", "configurationName": "c", "executableId": EXECUTABLE,
            "scenarioId": SCENARIO, "createdAt": "2024-01-01T00:00:00Z", "modifiedAt": "2024-01-01T00:00:00Z",
            "_run": spec.to_dict(), "_process": {"port": port},
        }  # fmt: skip


def test_proxy_streams_64_concurrent_responses_chunk_by_chunk(emulator: Emulator) -> None:
    clients = 64
    with GatedUpstream() as upstream:
        fake_running(emulator, "dfake00000000001", upstream.port)
        url = f"{emulator.base}/v2/inference/deployments/dfake00000000001/v1/stream"
        headers = emulator.headers()
        got_first = 0
        lock = threading.Lock()

        async def one(i: int, client: httpx.AsyncClient) -> bytes:
            nonlocal got_first
            buf = b""
            async with client.stream(
                "POST", url, headers=headers, content=f"#{i}".encode()
            ) as resp:
                assert resp.status_code == 200 and resp.headers["x-upstream"] == "yes"
                async for chunk in resp.aiter_raw():
                    before = b"first" in buf
                    buf += chunk
                    if not before and b"\n\n" in buf:
                        with lock:
                            got_first += 1
                            if got_first == clients:
                                upstream.release.set()
            return buf

        async def run() -> list[bytes]:
            limits = httpx.Limits(max_connections=clients * 2)
            async with httpx.AsyncClient(
                timeout=WAIT_S * 2, limits=limits, trust_env=False
            ) as client:
                return await asyncio.gather(*(one(i, client) for i in range(clients)))

        bodies = asyncio.run(run())
    assert all(
        b == f"data: first #{i}\n\ndata: second\n\n".encode() for i, b in enumerate(bodies)
    ), bodies[:3]
    # The upstream sees neither the token nor the resource group.
    assert all(
        "authorization" not in h and "ai-resource-group" not in h for h in upstream.seen_headers
    )


def test_proxy_checks_token_resource_group_and_deployment(emulator: Emulator) -> None:
    fake_running(emulator, "dfake00000000002", free_port())
    path = "/v2/inference/deployments/dfake00000000002/v1/models"
    no_token = httpx.get(
        emulator.base + path, headers={"AI-Resource-Group": "default"}, trust_env=False
    )
    assert no_token.status_code == 401
    no_group = httpx.get(
        emulator.base + path,
        headers={"Authorization": f"Bearer {emulator.token()}"},
        trust_env=False,
    )
    assert no_group.status_code == 400
    emulator.post("/v2/admin/resourceGroups", {"resourceGroupId": "other"}, group=None)
    wrong_group = httpx.get(
        emulator.base + path, headers=emulator.headers("other"), trust_env=False
    )
    assert wrong_group.status_code == 404
    unknown = httpx.get(
        emulator.base + path.replace("dfake00000000002", "dnothere00000000"),
        headers=emulator.headers(),
        trust_env=False,
    )
    assert unknown.status_code == 404
    down = httpx.get(emulator.base + path, headers=emulator.headers(), trust_env=False)
    assert down.status_code == 502  # RUNNING on paper, but nothing listens on its port


def test_a_request_waits_the_predictors_timeout_then_504(emulator: Emulator) -> None:
    """Issue 16, item 10: a request may take Knative's revision timeout (300 s) unless the
    predictor sets ``timeout``; a server that has not begun its answer by then gets 504."""
    import socket
    from types import SimpleNamespace

    from labkit.local.aicore.deployments import run_spec

    container = {"image": "x", "command": None}
    rendered = SimpleNamespace(container=container, env={}, port=8080, predictor={})
    assert run_spec(rendered).request_timeout == 300.0
    rendered.predictor = {"timeout": 30}
    assert run_spec(rendered).request_timeout == 30.0
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        fake_running(emulator, "dfake00000000003", silent.getsockname()[1], request_timeout=0.5)
        resp = httpx.get(
            f"{emulator.base}/v2/inference/deployments/dfake00000000003/v1/models",
            headers=emulator.headers(),
            trust_env=False,
            timeout=60,
        )
    assert resp.status_code == 504 and "0.5 s" in resp.json()["error"]["message"]
