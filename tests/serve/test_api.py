"""The search service's API: answers equal ``mmvicreg search``'s, every bad request is a 4xx with one line, and the
server keeps serving after them."""

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, python-multipart) is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from mmvicreg import JointEmbedding  # noqa: E402
from mmvicreg.cli import main  # noqa: E402
from mmvicreg.cli.serve import build_service  # noqa: E402
from mmvicreg.cli.common import CommandParser  # noqa: E402
from mmvicreg.serve.routes import create_app  # noqa: E402
from tests.helpers.models import CAPTIONS  # noqa: E402

N_IMAGES = 24


def build_index(root, images=None):
    """A tiny random model, an image folder (or ``images``), a caption file and their index; returns the index."""
    torch.manual_seed(0)
    model = JointEmbedding.from_config(
        {"image": {"encoder": "test_resnet", "expander": "32", "transform": {"size": 32}},
         "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 16}, "expander": "32"}},
        captions=CAPTIONS).save_pretrained(root / "model")
    if images is None:
        images = root / "images"
        images.mkdir()
        rng = np.random.default_rng(0)
        for i in range(N_IMAGES):
            Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(images / f"{i:03d}.jpg")
    captions = root / "captions.txt"
    captions.write_text("\n".join(dict.fromkeys(CAPTIONS)) + "\n")
    out = root / "idx"
    assert main(["index", "build", "--model", str(model), "--images", str(images), "--captions", str(captions),
                 "--out", str(out), "--no-progress"]) == 0
    return out


def service_for(index, **limits):
    parser = CommandParser(prog="test")
    from mmvicreg.cli.serve import add_serve_command

    add_serve_command(parser.add_subparsers(dest="command"))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in limits.items()]
    return build_service(parser.parse_args(["serve", "--index", str(index), "--device", "cpu", *flags]))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    service = service_for(build_index(root), max_upload_mb=0.05)
    return TestClient(create_app(service)), root


def test_a_text_query_answers_what_mmvicreg_search_answers(client, tmp_path):
    http, root = client
    body = http.get("/api/search", params={"q": "a red circle", "k": 7}).json()
    out = tmp_path / "hits.json"
    assert main(["search", "--index", str(root / "idx"), "--text", "a red circle", "-k", "7", "--json", str(out)]) == 0
    cli = json.loads(out.read_text())
    assert [(h["row"], h["id"]) for h in body["hits"]] == [(h["row"], h["id"]) for h in cli]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h["score"] for h in cli], abs=1e-6)


def test_an_image_query_and_an_item_query_find_the_item(client):
    http, root = client
    data = (root / "images" / "005.jpg").read_bytes()
    by_upload = http.post("/api/search/image", params={"k": 3}, files={"image": ("q.jpg", data, "image/jpeg")}).json()
    assert by_upload["hits"][0]["id"] == "005.jpg" and by_upload["hits"][0]["score"] == pytest.approx(1, abs=1e-4)
    by_row = http.get(f"/api/similar/{by_upload['hits'][0]['row']}", params={"k": 3}).json()
    assert by_row["hits"][0]["id"] == "005.jpg" and by_row["query"]["id"] == "005.jpg"
    thumb = http.get(f"/api/thumb/{by_row['hits'][0]['row']}")
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (56, 40)


def test_min_score_filters_and_health_and_metrics_answer(client):
    http, _ = client
    assert http.get("/api/search", params={"q": "a red circle", "min_score": 2}).json()["hits"] == []
    health = http.get("/api/health").json()
    assert health["status"] == "ok" and health["items"] == N_IMAGES + len(set(CAPTIONS))
    metrics = http.get("/api/metrics").json()
    assert metrics["queries"] >= 1 and metrics["latency_ms"]["p50"] > 0
    assert "mmvicreg search" in http.get("/").text


@pytest.mark.parametrize("request_, status, message", [
    (("get", "/api/search", {"params": {"q": ""}}), 400, "empty query"),
    (("get", "/api/search", {"params": {"q": "x" * 1001}}), 400, "the query is 1001 characters; at most 1000"),
    (("get", "/api/search", {"params": {"q": "dog", "k": 0}}), 400, "k must be between 1 and 100, got 0"),
    (("get", "/api/search", {"params": {"q": "dog", "k": "ten"}}), 400, "k: should be a valid integer"),
    (("post", "/api/search/image", {"files": {"image": ("a.txt", b"not an image", "text/plain")}}), 400,
     "the upload is not an image"),
    (("post", "/api/search/image", {"files": {"image": ("big.jpg", b"\xff" * 60_000, "image/jpeg")}}), 413,
     "uploads are limited to 52428 bytes"),
    (("post", "/api/search/image", {}), 400, "image: Field required"),
    (("get", "/api/similar/100000", {}), 404, "no indexed item 100000"),
    (("get", f"/api/thumb/{N_IMAGES + 1}", {}), 404, "is a caption, not an image"),
])
def test_bad_requests_are_one_line_and_the_server_keeps_serving(client, request_, status, message):
    http, _ = client
    method, url, kwargs = request_
    response = getattr(http, method)(url, **kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error and "\n" not in error
    assert http.get("/api/search", params={"q": "a red circle", "k": 2}).status_code == 200


def test_an_item_path_cannot_leave_the_image_folder(tmp_path):
    """A tampered items.jsonl (with its digest redone) naming ../ is refused, not read."""
    index = build_index(tmp_path)
    items = [json.loads(line) for line in (index / "items.jsonl").read_text().splitlines()]
    items[0]["id"] = "../model/config.json"
    data = "".join(json.dumps(i) + "\n" for i in items)
    from mmvicreg.evaluation.index_folder import digest

    (index / "items.jsonl").write_text(data)
    meta = json.loads((index / "meta.json").read_text())
    meta["items_sha256"] = digest(data.encode())
    (index / "meta.json").write_text(json.dumps(meta))
    http = TestClient(create_app(service_for(index)))
    response = http.get("/api/thumb/0")
    assert response.status_code == 404 and "not in the index's image folder" in response.json()["error"]
    assert os.path.exists(tmp_path / "model" / "config.json")
