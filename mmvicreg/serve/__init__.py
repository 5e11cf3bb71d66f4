"""``mmvicreg serve``: a search index and its model behind HTTP, with a page to search it in a browser.

:func:`mmvicreg.serve.app.create_app` builds the FastAPI application from a loaded
:class:`~mmvicreg.evaluation.search_index.SearchIndex` and its model (loaded once); :mod:`.stats` keeps the counts
and latencies the ``/api/metrics`` endpoint reports; ``page.html`` is the page (plain HTML and JavaScript, no build
step, nothing fetched from elsewhere). FastAPI and uvicorn are the optional extra ``mmvicreg[serve]``.
"""
