"""The framework's floor for benchmarks.http_commands: FastAPI served by uvicorn as `skillcert api` serves it, one
GET route behind one dependency that reads the Authorization header, nothing else (no middleware, no database).
What our own work per request (the token's lookup, the text rule, the body limits, the routing of a hundred
routes) adds to a trivial GET shows as the distance between this and GET /me.

    python -m uvicorn benchmarks.bare_api:app --workers 2 --port 8765
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Header

app = FastAPI()


def bearer(authorization: Annotated[str, Header()] = "") -> dict[str, str]:
    return {"token": authorization.removeprefix("Bearer ")[:12]}


@app.get("/me")
def me(who: Annotated[dict[str, str], Depends(bearer)]) -> dict[str, str]:
    return who
