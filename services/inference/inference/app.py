"""Inference service: iris species predictions over HTTP."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from inference.model import load

app = FastAPI(title="inference")


class Query(BaseModel):
    rows: list[list[float]]


@app.get("/health")
def health() -> dict[str, str]:
    load()
    return {"status": "ok"}


@app.post("/predict")
def predict(query: Query) -> dict[str, list[str]]:
    try:
        return {"predictions": load().predict(query.rows)}
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
