"""Reports service: HTML summaries of posted orders."""

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from reports.render import render

app = FastAPI(title="reports")


class Order(BaseModel):
    item: str
    amount: float


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/report", response_class=HTMLResponse)
def report(orders: list[Order]) -> str:
    return render([o.model_dump() for o in orders])
