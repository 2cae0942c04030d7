"""The console in a real browser: one small run through the local cloud to deployed, then headless
Chromium reads the runs page and the run's report. Each plot must be drawn (an inline SVG with a
box on screen), the browser must log no error (a refused fetch, a script error, a missing favicon),
and a screenshot of each page is kept under the test's tmp_path for a person to look at.

Selenium is given the system's chromedriver explicitly, and SE_MANAGER_PATH points nowhere useful,
so it never downloads a driver or a browser.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from functions.config import Config
from local_cloud.cloud import LocalCloud, LocalCloudSettings
from mlrelay.console import Console
from mlrelay.demo import ensure_sample
from mlrelay.report.page import PLOTS
from tests.e2e.test_local_chain import SMALL_TRAINING, publish_start, run_for_message, runs_of, wait_terminal

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"needs Debian's chromium and chromedriver at {CHROMIUM} and {CHROMEDRIVER} "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)


@pytest.fixture(scope="module")
def deployed_run(tmp_path_factory):
    """A local cloud with one small run that went into service; its run store and run id."""
    root = tmp_path_factory.mktemp("console-cloud")
    config = Config()
    settings = LocalCloudSettings(root=root, config=config, min_backoff_s=0.2, max_backoff_s=2.0)
    ensure_sample(root / "buckets" / config.bucket, rows=4000, seed=3)
    cloud = LocalCloud(settings).start()
    try:
        run_id = run_for_message(cloud, publish_start(cloud, {**SMALL_TRAINING, "source": "data/natality.parquet"}))
        status = wait_terminal(cloud, run_id)
        assert status.state.value == "deployed", (status.state.value, status.reason)
        yield runs_of(cloud), run_id
    finally:
        cloud.stop()


@pytest.fixture
def browser(monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_MANAGER_PATH", "/nonexistent/selenium-manager")  # never fetch a driver
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def errors_logged(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry.get("level") in ("SEVERE", "ERROR")]


def full_page_screenshot(driver, path: Path) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 600), 12000))
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    assert path.stat().st_size > 10_000
    return path


def test_the_console_shows_the_run_and_its_plots_in_chromium(deployed_run, browser, tmp_path):
    from selenium.webdriver.common.by import By

    runs, run_id = deployed_run
    console = Console(runs, "127.0.0.1", 0, quiet=True, bucket_label=f"gs://{runs.bucket}").start()
    try:
        browser.get(console.url)
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-run="{run_id}"]')
        assert "deployed" in row.text
        assert "100%" in browser.find_element(By.ID, "traffic").text
        assert not errors_logged(browser), errors_logged(browser)
        full_page_screenshot(browser, tmp_path / "runs.png")

        browser.set_window_size(1280, 1000)
        row.find_element(By.CSS_SELECTOR, f'a[href="/runs/{run_id}"]').click()
        assert browser.current_url.endswith(f"/runs/{run_id}")
        assert run_id in browser.find_element(By.TAG_NAME, "h1").text
        figures = browser.execute_script("""
            return Array.from(document.querySelectorAll('figure.plot')).map(figure => {
                const svg = figure.querySelector('svg');
                const box = svg ? svg.getBoundingClientRect() : null;
                return {name: figure.dataset.plot, missing: figure.classList.contains('missing'),
                        width: box ? box.width : 0, height: box ? box.height : 0,
                        shapes: svg ? svg.querySelectorAll('path, use, text').length : 0,
                        caption: (figure.querySelector('figcaption') || {}).textContent || ''};
            });""")
        assert [figure["name"] for figure in figures] == list(PLOTS)
        has_training_report = runs.storage.exists(f"runs/{run_id}/train/training_report.json")
        for figure in figures:
            assert figure["caption"].strip(), figure
            if figure["missing"]:  # only the plots of the trainer's training_report.json may be absent
                assert not has_training_report and figure["name"] in (
                    "learning-curves", "predicted-vs-actual", "residuals"), figure
                continue
            assert figure["width"] > 100 and figure["height"] > 50 and figure["shapes"] > 10, figure
        assert sum(not figure["missing"] for figure in figures) >= 4
        assert not errors_logged(browser), errors_logged(browser)
        screenshot = full_page_screenshot(browser, tmp_path / "run.png")

        browser.get(console.url + "runs/run-20000101-000000-0000000000")
        assert "Not found" in browser.find_element(By.TAG_NAME, "h1").text
        # the 404 is the one error the browser may log here: it is the answer asked for
        assert all("404" in entry["message"] for entry in errors_logged(browser))
    finally:
        console.stop()
    keep = os.environ.get("MLRELAY_SCREENSHOTS")
    if keep:  # for a person to look at after the run
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name in ("runs.png", "run.png"):
            shutil.copy(tmp_path / name, Path(keep) / name)
    print(json.dumps({"screenshots": [str(tmp_path / "runs.png"), str(screenshot)]}))
