"""The local AI Core's inference proxy: ``/v2/inference/deployments/<id>/<path>`` goes to the
deployment's server, streaming chunk by chunk, after the token and ``AI-Resource-Group`` checks;
neither the token nor the resource group reach the predictor."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from labkit.local.aicore.common import REQUEST_TIMEOUT_S, ApiError, missing
from labkit.local.aicore.deps import core_of
from labkit.local.aicore.store import Store

# Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy itself owns.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
}
_NOT_FORWARDED = _HOP_BY_HOP | {"authorization", "ai-resource-group", "content-length"}
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def inference_target(store: Store, group: str, dep_id: str) -> tuple[int, float]:
    """The local port of a RUNNING deployment's predictor and its request timeout."""
    with store.lock:
        dep = store.in_group("deployments", group).get(dep_id)
        if dep is None or dep.get("targetStatus") == "DELETED":
            raise missing(f"deployment '{dep_id}' in resource group '{group}'")
        port = (dep.get("_process") or {}).get("port")
        if dep["status"] != "RUNNING" or not port:
            raise ApiError(
                503,
                f"deployment {dep_id} is {dep['status']}, not RUNNING: wait for RUNNING "
                "(GET /v2/lm/deployments/<id>) or see its logs",
            )
        timeout = (dep.get("_run") or {}).get("request_timeout") or REQUEST_TIMEOUT_S
        return int(port), float(timeout)


router = APIRouter()


@router.api_route("/v2/inference/deployments/{dep_id}/{path:path}", methods=_METHODS)
async def inference(dep_id: str, path: str, request: Request) -> Response:
    core = core_of(request)
    core.tokens.check(request.headers.get("authorization"))
    group = core.resource_groups.group(request.headers.get("ai-resource-group"), unknown_status=404)
    port, timeout = inference_target(core.store, group, dep_id)
    url = f"http://127.0.0.1:{port}/{path}"
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED]
    body = await request.body()
    client: httpx.AsyncClient = request.app.state.http
    # A request may take the predictor's timeout (Knative's revision timeout, 300 s by default)
    # to start its answer; then 504, as the tenant's gateway answers (unverified).
    upstream = client.build_request(
        request.method, url, params=request.query_params, headers=headers, content=body,
        timeout=httpx.Timeout(timeout, connect=10.0, write=60.0, pool=60.0),
    )  # fmt: skip
    try:
        resp = await client.send(upstream, stream=True)
    except httpx.TimeoutException:
        raise ApiError(
            504, f"deployment {dep_id}'s server did not answer within the request timeout "
            f"({timeout:g} s)", "GatewayTimeout",
        ) from None  # fmt: skip
    except httpx.HTTPError as exc:
        raise ApiError(
            502, f"deployment {dep_id}'s server did not answer ({type(exc).__name__})"
        ) from None
    out_headers = {
        k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP | {"content-length"}
    }
    return StreamingResponse(
        resp.aiter_raw(),
        status_code=resp.status_code,
        headers=out_headers,
        background=BackgroundTask(resp.aclose),
    )
