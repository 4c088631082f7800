"""The page in a real browser: Debian's headless Chromium, driven by selenium, against a live server."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from app.main import create_app
from app.settings import Settings
from model.imaging import PHOTO_TYPE_NAMES
from tests.app.conftest import photo_bytes
from tests.conftest import free_port


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The app on a free port, in a thread, until the block ends."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def live_url(settings: Settings) -> Iterator[str]:
    with serving(settings) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("chromium and chromium-driver are not installed (`make test` installs them with apt-get)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(driver))  # no driver download
    yield chrome
    chrome.quit()


def test_page_shows_one_card_per_part_with_boxes(live_url: str, browser: webdriver.Chrome, tmp_path: Path) -> None:
    photo = tmp_path / "outfit.jpg"
    photo.write_bytes(photo_bytes(size=(240, 360)))
    expected = httpx.post(live_url + "recommend", files={"image": ("outfit.jpg", photo.read_bytes())}).json()
    assert expected["parts"], "the tiny model should find parts at threshold 0"

    browser.get(live_url)
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#parts-cards .card")) > 0)
    cards = browser.find_elements(By.CSS_SELECTOR, "#parts-cards .card")
    ids = [card.get_attribute("data-item-id") for card in cards]
    assert len(cards) == len(expected["parts"])
    assert all(ids) and len(set(ids)) == len(ids), ids
    boxes = browser.find_elements(By.CSS_SELECTOR, "#boxes .box")
    assert len(boxes) == len(cards)
    assert all(box.size["width"] > 0 and box.size["height"] > 0 for box in boxes)
    images = [card.find_element(By.TAG_NAME, "img") for card in cards]  # the products' photos load
    wait.until(lambda b: all(image.get_attribute("naturalWidth") not in (None, "0") for image in images))

    ActionChains(browser).move_to_element(cards[1]).perform()  # hovering a card highlights its box
    hot = browser.find_elements(By.CSS_SELECTOR, "#boxes .box.hot")
    assert [box.get_attribute("data-part") for box in hot] == ["1"]


def test_page_says_why_an_upload_is_rejected(live_url: str, browser: webdriver.Chrome, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    browser.get(live_url)
    browser.find_element(By.ID, "file").send_keys(str(notes))
    status = WebDriverWait(browser, 30).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "#status.error"))
    )
    assert "rejected" in status.text and PHOTO_TYPE_NAMES in status.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#parts-cards .card")


@pytest.fixture
def unsure_url(tiny_checkpoint: Path, bundles_dir: Path, catalogue_dir: Path) -> Iterator[str]:
    """A live server whose part threshold no group reaches: every answer is one unsure part."""
    from tests.app.conftest import make_settings

    settings = make_settings(tiny_checkpoint, bundles_dir, catalogue_dir, part_threshold=1.0, part_floor=0.0)
    with serving(settings) as url:
        yield url


def test_page_marks_a_low_confidence_part(unsure_url: str, browser: webdriver.Chrome, tmp_path: Path) -> None:
    photo = tmp_path / "outfit.jpg"
    photo.write_bytes(photo_bytes(size=(240, 360)))
    browser.get(unsure_url)
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#parts-cards .card")) > 0)
    (card,) = browser.find_elements(By.CSS_SELECTOR, "#parts-cards .card")
    assert card.find_element(By.CSS_SELECTOR, ".unsure").text == "low confidence"
    (box,) = browser.find_elements(By.CSS_SELECTOR, "#boxes .box")
    assert "unsure" in (box.get_attribute("class") or "") and box.text.endswith("?")
