"""The search service: a FastAPI application over one loaded index and its model.

Endpoints (JSON unless said otherwise):

* ``GET /`` — the search page (:file:`page.html`);
* ``GET /api/search?q=TEXT&k=10&min_score=S`` — a text query;
* ``POST /api/search/image`` (multipart field ``image``; ``k``, ``min_score`` as query parameters) — an image query;
* ``GET /api/similar/{row}?k=10&min_score=S`` — the items nearest indexed item ``row`` (its caption or image);
* ``GET /api/thumb/{row}`` — a JPEG thumbnail of indexed image ``row``;
* ``GET /api/health`` and ``GET /api/metrics`` (queries served, bad requests, latency percentiles).

A search answers ``{"query", "k", "hits": [{rank, score, row, id, kind, text?}], "ms"}``. Bad requests answer 4xx
with ``{"error": one line}`` and the server keeps serving: an empty or over-long query, ``k`` outside
1..``max_k``, an upload over ``max_upload_bytes`` or not an image, an unknown row. Nothing a request carries reaches
the file system: rows index the index's own items, and an image is read only from the image folder recorded in
the index (and only inside it). Queries run one at a time (a lock), since the model is not shared across threads.
"""

from __future__ import annotations

import io
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from mmvicreg.serve.stats import QueryStats

PAGE = Path(__file__).with_name("page.html")
THUMB_SIDE = 256


class BadRequest(Exception):
    """A request the service refuses: ``status`` and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class SearchService:
    """What the endpoints do, without HTTP: checks, the locked query, the index's image files."""

    def __init__(self, index: Any, model: Any, *, max_k: int = 100, max_query_chars: int = 1000,
                 max_upload_bytes: int = 8 << 20, encode_options: dict[str, Any] | None = None) -> None:
        self.index, self.model = index, model
        self.max_k, self.max_query_chars, self.max_upload_bytes = max_k, max_query_chars, max_upload_bytes
        self.encode_options = dict(encode_options or {})
        self.stats = QueryStats()
        self._lock = threading.Lock()
        root = index.meta.get("sources", {}).get("images")
        self.image_root = Path(root).resolve() if root else None
        self.thumbnail = lru_cache(maxsize=4096)(self._thumbnail)

    # ------------------------------------------------------------------ checks

    def check_k(self, k: int) -> int:
        if not 1 <= k <= self.max_k:
            raise BadRequest(400, f"k must be between 1 and {self.max_k}, got {k}")
        return k

    def check_text(self, q: str | None) -> str:
        if q is None or not q.strip():
            raise BadRequest(400, "empty query: give q=TEXT (or upload an image to /api/search/image)")
        if len(q) > self.max_query_chars:
            raise BadRequest(400, f"the query is {len(q)} characters; at most {self.max_query_chars}")
        return q

    def item(self, row: int) -> dict[str, Any]:
        if not 0 <= row < len(self.index.items):
            raise BadRequest(404, f"no indexed item {row}: rows run from 0 to {len(self.index.items) - 1}")
        return self.index.items[row]

    def image_path(self, row: int) -> Path:
        """The file of indexed image ``row``, inside the index's image folder (else 404)."""
        item = self.item(row)
        if item["kind"] != "image" or self.image_root is None:
            raise BadRequest(404, f"indexed item {row} is a {item['kind']}, not an image with a file")
        path = (self.image_root / item["id"]).resolve()
        if not path.is_relative_to(self.image_root) or not path.is_file():
            raise BadRequest(404, f"the image of indexed item {row} is not in the index's image folder")
        return path

    @staticmethod
    def decode_upload(data: bytes) -> Any:
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as e:
            raise BadRequest(400, f"the upload is not an image that can be decoded ({type(e).__name__}); send a "
                                  f"JPEG, PNG, WebP or BMP file") from None
        return image.convert("RGB")

    # ------------------------------------------------------------------ queries

    def search(self, *, text: str | None = None, image: Any = None, k: int = 10,
               min_score: float | None = None) -> dict[str, Any]:
        start = time.perf_counter()
        with self._lock:
            hits = self.index.query(self.model, text=text, image=image, k=self.check_k(k), **self.encode_options)
        if min_score is not None:
            hits = [h for h in hits if h["score"] >= min_score]
        ms = 1000 * (time.perf_counter() - start)
        self.stats.record(ms)
        return {"query": text if text is not None else "(image)", "k": k, "hits": hits, "ms": round(ms, 2)}

    def similar(self, row: int, k: int = 10, min_score: float | None = None) -> dict[str, Any]:
        item = self.item(row)
        if item["kind"] == "caption":
            out = self.search(text=item["text"], k=k, min_score=min_score)
        else:
            from mmvicreg.evaluation.search_index import read_query_image

            out = self.search(image=read_query_image(self.image_path(row)), k=k, min_score=min_score)
        return {**out, "query": {"row": row, **item}}

    def _thumbnail(self, row: int) -> bytes:
        from PIL import Image

        with Image.open(self.image_path(row)) as im:
            im.draft("RGB", (THUMB_SIDE, THUMB_SIDE))  # a JPEG decodes at a reduced scale
            im = im.convert("RGB")
            im.thumbnail((THUMB_SIDE, THUMB_SIDE))
            out = io.BytesIO()
            im.save(out, format="JPEG", quality=85)
        return out.getvalue()
