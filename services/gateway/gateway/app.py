"""API gateway: one public entry that routes to internal services."""

import os

import httpx
from fastapi import FastAPI, HTTPException

ROUTES = {"users": os.environ.get("USERS_URL", "http://users:8000")}

app = FastAPI(title="gateway")


def upstream(service: str, path: str) -> str:
    if service not in ROUTES:
        raise HTTPException(status_code=404, detail=f"no route for {service!r}")
    return f"{ROUTES[service].rstrip('/')}/{path.lstrip('/')}"


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/{service}/{path:path}")
async def forward(service: str, path: str) -> object:
    url = upstream(service, f"{service}/{path}")
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            resp = await client.get(url)
        except httpx.HTTPError as exc:
            raise HTTPException(status_code=502, detail=f"{service} unreachable") from exc
    if resp.status_code >= 400:
        raise HTTPException(status_code=resp.status_code, detail=resp.text)
    return resp.json()
