"""A small FastAPI service on backend_kit: request ids, one log line per request,
health probes answered before the app's own authentication, Sentry when configured.

Run it: ``uvicorn app:app --port 8000`` from this folder.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Header, HTTPException

from backend_kit import current_request_id, get_logger, load_settings
from backend_kit.asgi import BackendKitMiddleware

settings = load_settings(service_name="notes-fastapi")
log = get_logger("notes")
notes: dict[str, str] = {}


def require_token(authorization: str | None = Header(default=None)) -> None:
    """Every route of the app needs a bearer token; the health probes do not."""
    if authorization != f"Bearer {settings.service_name}-token":
        raise HTTPException(status_code=401, detail="missing or wrong token")


app = FastAPI(dependencies=[Depends(require_token)])
app.add_middleware(BackendKitMiddleware, settings=settings)


@app.put("/notes/{name}")
def put_note(name: str, text: str) -> dict[str, str | None]:
    notes[name] = text
    log.info("note_saved", note=name)
    return {"name": name, "request_id": current_request_id()}


@app.get("/notes/{name}")
async def get_note(name: str) -> dict[str, str]:
    if name not in notes:
        raise HTTPException(status_code=404, detail="no such note")
    return {"name": name, "text": notes[name]}
