"""The HTML drift report, opened in a real headless Chromium (Debian's, `make chromium`).

The browser runs offline (no network flags, a fresh profile); the test reads the rendered
page's text and SVG geometry through ChromeDriver and checks the screenshot's pixels.
"""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
from conftest import make_tabular_frame

from bundle.drift import DriftAccumulator, build_profile

SCHEMA = {
    "kind": "tabular",
    "columns": [
        {"name": "age", "kind": "float"},
        {"name": "income", "kind": "float"},
        {"name": "plan", "kind": "string"},
        {"name": "region", "kind": "string"},
    ],
}
TRAINING_RGB = (0x4C, 0x78, 0xA8)
CURRENT_RGB = (0xF5, 0x85, 0x18)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1000,2400",
)


@pytest.fixture(scope="module")
def report():
    training, _ = make_tabular_frame(3_000)
    profile = build_profile(SCHEMA, training[["age", "income", "plan", "region"]])
    current, _ = make_tabular_frame(3_000, seed=7)
    current["income"] = current["income"] * 2
    current.loc[current.index[:400], "plan"] = "enterprise"
    accumulator = DriftAccumulator(profile)
    accumulator.update(current)
    return accumulator.report(label="bundle 'churn' 1.0.0")


def test_the_page_is_self_contained(report):
    page = report.to_html()
    assert "<script" not in page and "<link" not in page and "<img" not in page
    # The only URL is the SVG namespace, which is a name, not a request.
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}
    assert page.count("<svg") == 4
    assert page.index("<h2>income") < page.index("<h2>age")  # worst first
    assert "New values: &#x27;enterprise&#x27; 13.3%" in page


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("Chromium is not installed: run `make chromium` (Debian's packages)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    yield driver
    driver.quit()


@pytest.mark.slow
def test_the_report_renders_its_plots_in_chromium(report, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    path = tmp_path / "drift.html"
    path.write_text(report.to_html(), encoding="utf-8")
    browser.get(path.as_uri())
    text = browser.find_element(By.TAG_NAME, "body").text
    for name in ("age", "income", "plan", "region"):
        assert re.search(rf"^{name}\b", text, re.M), f"{name} is not on the page"
    assert "Drift in 2 of 4 features" in text
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert headings == [f"{f.name}{'drift' if f.drifted else 'ok'}" for f in report.features]
    assert {f.name for f in report.features[:2]} == {"income", "plan"}
    # Every chart is laid out with a real size and holds bars of both colours.
    charts = browser.find_elements(By.CSS_SELECTOR, "section svg")
    assert len(charts) == 4
    for chart in charts:
        assert chart.size["width"] > 700 and chart.size["height"] > 200
    heights = browser.execute_script(
        "return Array.from(document.querySelectorAll('section svg rect[fill]'))"
        ".map(r => [r.getAttribute('fill'), r.getBoundingClientRect().height]);"
    )
    drawn = {fill for fill, height in heights if height > 1}
    assert {"#4c78a8", "#f58518"} <= drawn
    image = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    not_white = (pixels < 245).any(axis=1).mean()
    assert 0.02 < not_white < 0.6, f"{not_white:.1%} of the screenshot is not white"
    for rgb in (TRAINING_RGB, CURRENT_RGB):
        close = (np.abs(pixels - np.array(rgb)).sum(axis=1) < 30).sum()
        assert close > 2_000, f"only {close} pixels of {rgb} in the screenshot"
