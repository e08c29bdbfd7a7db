"""Users service: a small in-memory user directory over HTTP."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

app = FastAPI(title="users")


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")


class User(NewUser):
    id: int


_users: dict[int, User] = {}


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/users", status_code=201)
def create_user(new: NewUser) -> User:
    if any(u.email == new.email for u in _users.values()):
        raise HTTPException(status_code=409, detail="email already registered")
    user = User(id=len(_users) + 1, **new.model_dump())
    _users[user.id] = user
    return user


@app.get("/users/{user_id}")
def get_user(user_id: int) -> User:
    if user_id not in _users:
        raise HTTPException(status_code=404, detail="no such user")
    return _users[user_id]
