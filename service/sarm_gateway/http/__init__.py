"""The HTTP front end: FastAPI on uvicorn, in the gRPC server's process and event loop, sharing its Engine."""

from sarm_gateway.http.app import create_app
from sarm_gateway.http.server import HttpServer

__all__ = ["HttpServer", "create_app"]
