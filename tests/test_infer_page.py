"""The page at "/" in real headless Chromium (Debian's chromium + chromium-driver, through selenium):
upload real images, read the bars back, and keep a screenshot with the test's files.

`.ci/run` installs Chromium and sets INCEPTIONV4_REQUIRE_BROWSER=1, so there a missing browser is
a failure, not a skip.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inceptionv4.infer.predict import predict
from inceptionv4.serve.server import InferenceServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HAVE_BROWSER = bool(CHROMIUM and CHROMEDRIVER)
if not HAVE_BROWSER and os.environ.get("INCEPTIONV4_REQUIRE_BROWSER") == "1":
    raise RuntimeError("INCEPTIONV4_REQUIRE_BROWSER=1 but chromium / chromedriver are not installed")
pytestmark = pytest.mark.skipif(not HAVE_BROWSER, reason="needs Debian's chromium and chromium-driver")

#: where the screenshots are kept (the test's files, beside the tests)
SHOTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1100,1400", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)  # no Selenium Manager
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_person_uploads_images_and_reads_the_bars(small_model, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rng = np.random.default_rng(3)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(photo, quality=92)
    broken = tmp_path / "broken.png"  # a real PNG cut short
    Image.fromarray(rng.integers(0, 256, (90, 90, 3), dtype=np.uint8)).save(broken)
    broken.write_bytes(broken.read_bytes()[:200])
    want = next(predict(small_model, str(photo), topk=3))["top"]
    with InferenceServer(small_model, port=0, access_log=False) as server:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "model-card").get_attribute("data-architecture"))
        card = browser.find_element(By.ID, "model-card").text
        assert "inception_resnet_v1" in card and "torch fp32 on cpu" in card and "75×75" in card
        assert "3 (red, green, blue)" in card
        browser.find_element(By.ID, "file-input").send_keys(f"{photo}\n{broken}")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result[data-state='done'], .result[data-state='error']")) == 2)  # noqa: E501
        good = browser.find_element(By.CSS_SELECTOR, ".result[data-file='photo.jpg']")
        bars = good.find_elements(By.CSS_SELECTOR, ".bar")
        # three classes, so the top-5 shows all three, best first, as predict() ranks them
        got = [(b.get_attribute("data-name"), float(b.get_attribute("data-prob"))) for b in bars]
        assert [n for n, _ in got] == [t["name"] for t in want]
        assert max(abs(p - t["prob"]) for (_, p), t in zip(got, want, strict=True)) < 1e-5
        shown = [b.find_element(By.CSS_SELECTOR, ".prob").text for b in bars]
        assert shown == [f"{100 * t['prob']:.1f}%" for t in want]
        widths = [b.find_element(By.CSS_SELECTOR, ".fill").size["width"] for b in bars]
        assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1] > 0  # drawn to scale
        assert good.find_element(By.CSS_SELECTOR, ".status").text.endswith(" ms")
        bad = browser.find_element(By.CSS_SELECTOR, ".result[data-file='broken.png']")
        assert bad.find_element(By.CSS_SELECTOR, ".status").text.startswith("Not read: corrupt or truncated image")
        assert not bad.find_elements(By.CSS_SELECTOR, ".bar")
        SHOTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SHOTS / "page.png"))
    assert (SHOTS / "page.png").stat().st_size > 10_000


def test_why_draws_the_heatmap_over_the_image_from_v1_explain(small_model, tmp_path, browser):
    """Upload, toggle "Why?": the overlay /v1/explain drew appears under the bars with the class
    explained (the top one) and its probability; toggling again hides it, and once more shows it
    without asking the server again. A screenshot is kept."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rng = np.random.default_rng(11)
    photo = tmp_path / "cat.jpg"
    Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(photo, quality=92)
    want = next(predict(small_model, str(photo), topk=1))["top"][0]
    with InferenceServer(small_model, port=0, access_log=False) as server:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_element(By.ID, "model-card").get_attribute("data-architecture"))
        assert "hirescam heatmaps at last stage" in browser.find_element(By.ID, "model-card").text
        browser.find_element(By.ID, "file-input").send_keys(str(photo))
        item = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".result[data-state='done']"))
        why = item.find_element(By.CSS_SELECTOR, ".why")
        assert why.is_displayed() and why.text == "Why?"
        assert not item.find_elements(By.CSS_SELECTOR, "img.overlay")  # nothing asked before the toggle
        why.click()
        wait.until(lambda d: item.get_attribute("data-explain") == "done")
        overlay = item.find_element(By.CSS_SELECTOR, ".explain img.overlay")
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
        assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", overlay) == [200, 150]
        assert overlay.is_displayed() and overlay.size["width"] > 100
        caption = item.find_element(By.CSS_SELECTOR, ".explain figcaption").text
        assert caption.startswith(f"Why {want['name']} ({100 * want['prob']:.1f}%)") and "hirescam at stage_c" in caption
        assert why.text == "Hide why" and why.get_attribute("aria-expanded") == "true"
        SHOTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SHOTS / "page-why.png"))
        def explained():
            text = server.metrics.exposition()[0].decode()
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("inceptionv4_requests_total{") and '"/v1/explain"' in line)  # fmt: skip

        assert explained() == 1
        why.click()
        assert not overlay.is_displayed() and why.text == "Why?"
        why.click()
        assert overlay.is_displayed()
        assert explained() == 1  # asked once
    assert (SHOTS / "page-why.png").stat().st_size > 10_000


def test_the_page_at_phone_width_keeps_order_bars_and_no_broken_icons(small_model, tmp_path, browser):
    """390 px wide: nothing overflows sideways and every bar keeps a track; results come in the
    order chosen (a later choice on top); a file the browser cannot draw gets a 'no preview' tile,
    not a broken-image icon; the tagline counts the model's 3 classes; /favicon.ico is served."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rng = np.random.default_rng(5)
    names = []
    for name in ("b-first.jpg", "a-second.jpg", "c-third.png"):
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(tmp_path / name)
        names.append(name)
    (tmp_path / "notes.jpg").write_text("not an image at all")
    later = tmp_path / "later.jpg"
    Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)).save(later)
    browser.set_window_size(390, 844)
    with InferenceServer(small_model, port=0, access_log=False) as server:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "model-card").get_attribute("data-architecture"))
        assert browser.execute_script("return window.innerWidth") <= 400
        tagline = browser.find_element(By.ID, "tagline").text
        assert "the probabilities of all 3 classes" in tagline and "top 5" not in tagline
        icon = browser.execute_script("return fetch('/favicon.ico').then(r => [r.status, r.headers.get('content-type')])")
        assert icon == [200, "image/x-icon"]
        browser.find_element(By.ID, "file-input").send_keys("\n".join(str(tmp_path / n) for n in [*names, "notes.jpg"]))
        settled = ".result[data-state='done'], .result[data-state='error']"
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, settled)) == 4)
        browser.find_element(By.ID, "file-input").send_keys(str(later))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, settled)) == 5)
        order = [e.get_attribute("data-file") for e in browser.find_elements(By.CSS_SELECTOR, ".result")]
        assert order == ["later.jpg", *names, "notes.jpg"]
        assert browser.execute_script("return document.documentElement.scrollWidth") <= browser.execute_script(
            "return document.documentElement.clientWidth")  # fmt: skip
        for bar in browser.find_elements(By.CSS_SELECTOR, ".bar"):
            assert bar.find_element(By.CSS_SELECTOR, ".track").size["width"] >= 30
            assert bar.find_element(By.CSS_SELECTOR, ".fill").size["width"] > 0
        bad = browser.find_element(By.CSS_SELECTOR, ".result[data-file='notes.jpg']")
        assert bad.get_attribute("data-state") == "error"
        wait.until(lambda d: bad.find_elements(By.CSS_SELECTOR, ".thumb.none"))
        assert not bad.find_elements(By.CSS_SELECTOR, "img") and bad.find_element(By.CSS_SELECTOR, ".thumb").text == "no preview"
        drawn = browser.execute_script("return [...document.querySelectorAll('img.thumb')].map(i => i.naturalWidth)")
        assert len(drawn) == 4 and min(drawn) > 0  # the others are real thumbnails
        SHOTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SHOTS / "page-390px.png"))


def test_the_api_docs_render_offline(small_model, browser):
    """/docs draws from the swagger-ui files the serve extra installs: no CDN."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with InferenceServer(small_model, port=0, access_log=False, warm_up=False) as server:
        browser.get(server.url + "/docs")
        WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
        paths = {e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/v1/predict", "/v1/model", "/health", "/metrics"} <= paths
