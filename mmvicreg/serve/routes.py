"""The HTTP surface of :class:`~mmvicreg.serve.app.SearchService`: FastAPI routes, and errors as one JSON line.

Every refusal answers ``{"error": "..."}`` with its 4xx status: the service's own (:class:`BadRequest`), a request
body over the upload limit (413, judged from ``Content-Length`` before it is read, and again while reading), and
FastAPI's parameter validation (400, worded as one line instead of its list of details).

No ``from __future__ import annotations`` here: FastAPI reads the route functions' annotations (``UploadFile``) as
objects, which the routes defined inside :func:`create_app` see among its local imports. FastAPI (the ``serve``
extra) is imported only there, so importing this module needs nothing optional.
"""

from typing import Any, Optional

from mmvicreg.serve.app import PAGE, BadRequest, SearchService


def _error(status: int, message: str) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: Any) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "the request"
    return f"{where}: {first.get('msg', 'invalid')}".replace("Input should be", "should be")


def create_app(service: SearchService) -> Any:
    """The FastAPI application serving ``service`` and the page."""
    from fastapi import FastAPI, Query, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, Response

    app = FastAPI(title="mmvicreg search", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(BadRequest)
    async def refused(request: Request, exc: BadRequest) -> Any:
        service.stats.reject()
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Any:
        service.stats.reject()
        return _error(400, _validation_message(exc))

    @app.middleware("http")
    async def bounded_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > service.max_upload_bytes + 4096:
            service.stats.reject()
            return _error(413, f"the request is {int(length)} bytes; uploads are limited to "
                               f"{service.max_upload_bytes} bytes")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        meta = service.index.meta
        return {"status": "ok", "items": meta["count"], "index": meta["index"], "model": meta["model"].get("ref")}

    @app.get("/api/metrics")
    def metrics() -> dict[str, Any]:
        return service.stats.snapshot()

    @app.get("/api/search")
    def search(q: Optional[str] = None, k: int = 10, min_score: Optional[float] = None) -> dict[str, Any]:
        return service.search(text=service.check_text(q), k=k, min_score=min_score)

    @app.post("/api/search/image")
    async def search_image(image: UploadFile, k: int = Query(10), min_score: Optional[float] = None) -> dict[str, Any]:
        service.check_k(k)
        data = await image.read(service.max_upload_bytes + 1)
        if len(data) > service.max_upload_bytes:
            raise BadRequest(413, f"the image is over the upload limit of {service.max_upload_bytes} bytes")
        return await run_in_threadpool(service.search, image=service.decode_upload(data), k=k, min_score=min_score)

    @app.get("/api/similar/{row}")
    def similar(row: int, k: int = 10, min_score: Optional[float] = None) -> dict[str, Any]:
        return service.similar(row, k=k, min_score=min_score)

    @app.get("/api/thumb/{row}")
    def thumb(row: int) -> Any:
        return Response(service.thumbnail(row), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    return app
