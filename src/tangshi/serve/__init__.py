"""The HTTP server and its page: `create_app` (FastAPI, one router a job) and `run` (under uvicorn)."""

from tangshi.serve.app import create_app, run

__all__ = ["create_app", "run"]
