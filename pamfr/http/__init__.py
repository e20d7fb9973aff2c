"""The daemon's HTTP port: an ASGI application (Starlette) served by uvicorn in the daemon's
own event loop."""
