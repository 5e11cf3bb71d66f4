"""The search page in a real headless browser (the system's chromium through selenium): a caption query over the
flickr8k-1k index shows the hits the API gives, with their thumbnails; a dropped image searches by image; clicking a
result searches by it. The results page's screenshot is saved (``MMVICREG_SCREENSHOTS`` or the test's folder)."""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from mmvicreg.cli import main
from tests.conftest import SHARED_DATA
from tests.helpers import REPO_ROOT

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, python-multipart) is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra) is not installed")
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium + chromedriver (Debian: apt-get "
                                                                  "install chromium chromium-driver)")
FLICKR = SHARED_DATA / "flickr8k-1k"
QUERY = "a dog runs through the grass"


def _get(url: str, **params):
    import urllib3

    return urllib3.request("GET", url, fields=params or None)


def _post_image(url: str, data: bytes, **params):
    import urllib.parse

    import urllib3

    return urllib3.request("POST", f"{url}?{urllib.parse.urlencode(params)}",
                           fields={"image": ("query.jpg", data, "image/jpeg")}).json()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A model trained briefly on flickr8k-1k, its index of the 1,000 images, served on a free port."""
    import urllib3
    import uvicorn

    from mmvicreg.serve.routes import create_app
    from tests.serve.test_api import service_for

    if not FLICKR.is_dir():
        pytest.skip(f"{FLICKR} is absent (the shared data beside the checkout)")
    root = tmp_path_factory.mktemp("page")
    assert main(["train", str(REPO_ROOT / "examples" / "quickstart.yaml"), f"output_dir={root / 'run'}",
                 "train.max_steps=5", "train.batch_size=32", "train.progress=false", "data.eval=null",
                 "data.train.format=csv", f"data.train.captions={FLICKR / 'captions.csv'}",
                 f"data.train.images={FLICKR / 'images'}"]) == 0
    assert main(["index", "build", "--model", str(root / "run" / "model"), "--images", str(FLICKR / "images"),
                 "--out", str(root / "idx"), "--no-progress", "--workers", "0"]) == 0
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service_for(root / "idx")), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if _get(f"{url}/api/health").status == 200:
                break
        except urllib3.exceptions.HTTPError:
            time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _cards(browser, n):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".hit")) == n)
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)"))
    return browser.execute_script(
        "return [...document.querySelectorAll('.hit')].map(c => [Number(c.dataset.row), "
        "Number(c.querySelector('.score').textContent)])")


def test_a_caption_query_shows_the_hits_with_thumbnails(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server)
    browser.find_element(By.ID, "q").send_keys(QUERY)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    shown = _cards(browser, 20)
    api = _get(f"{server}/api/search", q=QUERY, k=20).json()["hits"]
    assert [row for row, _ in shown] == [h["row"] for h in api]
    assert [s for _, s in shown] == pytest.approx([round(h["score"], 3) for h in api], abs=1e-3)
    assert [s for _, s in shown] == sorted((s for _, s in shown), reverse=True)
    assert browser.find_element(By.ID, "status").text.startswith(f'20 results for "{QUERY}"')
    folder = Path(os.environ.get("MMVICREG_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(folder / "search_page.png"))
    assert (folder / "search_page.png").stat().st_size > 10_000


def test_a_dropped_image_searches_by_image_and_a_click_by_the_item(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server)
    thumb = _get(f"{server}/api/thumb/7").data
    browser.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "query.jpg", {type: "image/jpeg"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
    """, __import__("base64").b64encode(thumb).decode())
    shown = _cards(browser, 20)
    api = _post_image(f"{server}/api/search/image", thumb, k=20)["hits"]
    assert [row for row, _ in shown] == [h["row"] for h in api]
    assert "results for \"(image)\"" in browser.find_element(By.ID, "status").text
    browser.find_elements(By.CSS_SELECTOR, ".hit")[3].click()
    clicked = shown[3][0]
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda d: "results for" in d.find_element(By.ID, "status").text
                                     and d.find_elements(By.CSS_SELECTOR, ".hit")[0].get_attribute("data-row")
                                     == str(clicked))
