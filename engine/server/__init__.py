"""`tansaku serve`: the REST API and web pages over warm galleries (FastAPI on uvicorn)."""

from engine.server.app import ServerConfig, create_app, is_loopback

__all__ = ["ServerConfig", "create_app", "is_loopback"]
