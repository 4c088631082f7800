"""Screenshots of the page at GET / on a running service, for the README and docs/.

    python bench/page_screenshot.py --url http://127.0.0.1:8000/ \
        --photo $FASHION_DATA_DIR/ccp/photos/0002.jpg --out docs/page.png [--baseline] [--width 390]

Drives Debian's headless chromium (chromium + chromium-driver) with selenium, as the browser test does.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000/")
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--baseline", action="store_true", help="show the whole-photo baseline beside")
    parser.add_argument("--width", type=int, default=1400, help="window width (390: a phone)")
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--hover", type=int, default=None, help="hover this card (0-based)")
    args = parser.parse_args()

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={args.width},{args.height}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
    try:
        browser.get(args.url)
        if args.baseline:
            browser.find_element(By.ID, "baseline").click()
        browser.find_element(By.ID, "file").send_keys(str(args.photo.resolve()))
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#parts-cards .card"))
        if args.baseline:
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#global-cards .card"))
        wait.until(
            lambda b: all(
                i.get_attribute("naturalWidth") not in (None, "0")
                for i in b.find_elements(By.CSS_SELECTOR, ".card img")
            )
        )
        if args.hover is not None:
            ActionChains(browser).move_to_element(
                browser.find_elements(By.CSS_SELECTOR, "#parts-cards .card")[args.hover]
            ).perform()
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(args.width, max(args.height, int(height)))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
