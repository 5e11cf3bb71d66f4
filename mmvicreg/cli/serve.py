"""``mmvicreg serve --index DIR``: the search service and its page (:mod:`mmvicreg.serve`), over HTTP.

    mmvicreg serve --index photos.index                      # http://127.0.0.1:8000
    mmvicreg serve --index photos.index --host 0.0.0.0 --port 9000 --device cuda

The index and its model are loaded once (the model the index records, checked by fingerprint, or ``--model``), then
uvicorn answers until interrupted. It binds to localhost unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any

from mmvicreg.choices import EVAL_PRECISIONS


def build_service(args: argparse.Namespace) -> Any:
    """The :class:`~mmvicreg.serve.app.SearchService` of ``--index`` and its model, with the request limits."""
    from mmvicreg.cli.index import index_model
    from mmvicreg.evaluation.search_index import SearchIndex
    from mmvicreg.serve.app import SearchService

    if args.max_k < 1 or args.max_query_chars < 1 or args.max_upload_mb <= 0:
        raise ValueError("--max-k, --max-query-chars and --max-upload-mb must be positive")
    index = SearchIndex.load(args.index)
    model = index_model(index, args.model, args.device)
    options = {"precision": args.precision} if args.precision else {}
    return SearchService(index, model, max_k=args.max_k, max_query_chars=args.max_query_chars,
                         max_upload_bytes=int(args.max_upload_mb * (1 << 20)), encode_options=options)


def run_serve(args: argparse.Namespace) -> int:
    """Load, then serve until interrupted."""
    from mmvicreg.extras import import_extra

    uvicorn = import_extra("uvicorn", "serve", "mmvicreg serve needs uvicorn and FastAPI")
    import_extra("fastapi", "serve", "mmvicreg serve needs uvicorn and FastAPI")
    import_extra("multipart", "serve", "mmvicreg serve's image uploads need python-multipart")
    from mmvicreg.serve.routes import create_app

    service = build_service(args)
    meta = service.index.meta
    print(f"serving {meta['count']} items ({meta['index']} index) at http://{args.host}:{args.port}  (Ctrl-C stops)")
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_serve_command(subparsers: Any) -> None:
    """Register ``serve`` on the top-level ``subparsers``; parsed args carry ``run``."""
    from mmvicreg.cli.common import HelpFormatter

    p = subparsers.add_parser("serve", help="serve a search index over HTTP, with a search page",
                              description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--index", required=True, help="the index folder (written by mmvicreg index build --out)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--model", help="the model that built the index, if moved (default: the one in meta.json)")
    p.add_argument("--device", help="where the model runs: cpu, cuda, cuda:N (default: cuda when torch sees one)")
    p.add_argument("--precision", choices=EVAL_PRECISIONS, help="autocast precision of the encoder (default: auto)")
    p.add_argument("--max-k", type=int, default=100, help="the most results one query may ask for")
    p.add_argument("--max-query-chars", type=int, default=1000, help="the longest text query accepted")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="the largest image upload accepted, in MiB")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (info logs every request)")
    p.set_defaults(run=run_serve)
