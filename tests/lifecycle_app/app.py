"""A Flask service for the gunicorn lifecycle tests: quick, slow and loud requests."""

from __future__ import annotations

import os
import time

from flask import Flask, request

from backend_kit import get_logger
from backend_kit.flask import init_app

app = init_app(Flask("lifecycle"))
log = get_logger("lifecycle")


@app.get("/work")
def work() -> dict[str, int]:
    time.sleep(0.02)
    return {"pid": os.getpid()}


@app.get("/slow")
def slow() -> dict[str, int]:
    time.sleep(float(request.args.get("seconds", "2")))
    return {"pid": os.getpid()}


@app.get("/big")
def big() -> dict[str, int]:
    # One line of about SIZE bytes: far above the pipe's atomic write size (4 KB).
    size = int(request.args.get("size", "65536"))
    number = int(request.args.get("n", "0"))
    log.info("big_line", n=number, pid=os.getpid(), payload="x" * size)
    return {"n": number}
