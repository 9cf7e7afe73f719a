"""The leaderboard page (``evar leaderboard --format html``) in a real headless Chromium, and the validator's
rebuild of stored leaderboards from the run records."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from evar.cli import main
from evar.results.page import page_data
from evar.synth.trees import make_esc50_tree

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")  # Debian's chromium and chromium-driver packages
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "leaderboard-page.png"


@pytest.fixture
def results(tmp_path: Path, evar_dirs: Path, byola512_weights: Path) -> Path:
    """Real runs: two encoders under the linear probe, one under kNN, and the page and table written."""
    root = make_esc50_tree(tmp_path / "ESC-50-master", n_classes=4, clips_per_class_per_fold=2, sample_rate=16000,
                           seconds=1.0, noise=0.5)
    assert main(["prepare", "esc50", "--root", str(root)]) == 0
    for args in (["--model", "melspec", "--max-epochs", "20"],
                 ["--model", "byola", "--weights", str(byola512_weights), "--max-epochs", "20"],
                 ["--model", "melspec", "--protocol", "knn"]):
        assert main(["probe", "--task", "esc50", *args]) == 0
    folder = evar_dirs / "results"
    assert main(["leaderboard", "--format", "html", "--out", str(folder / "leaderboard.html")]) == 0
    assert main(["leaderboard", "--out", str(folder / "leaderboard.md")]) == 0
    return folder


def test_the_page_holds_every_protocol_with_cost_links_and_figures(results: Path) -> None:
    text = (results / "leaderboard.html").read_text()
    assert "http://" not in text and "https://" not in text and "<link" not in text  # nothing fetched at view time
    data = page_data(text)
    assert set(data["tables"]) == {"linear", "knn"} and data["selected"] == "linear"
    rows = {r["label"]: r for r in data["tables"]["linear"]["rows"]}
    assert set(rows) == {"melspec", "byola"}
    assert rows["byola"]["params"] == 600192 and rows["byola"]["gflops"] > rows["melspec"]["gflops"] > 0
    cell = rows["byola"]["cells"]["esc50"]
    assert (results / "records" / f"{cell['run_id']}.json").is_file()
    assert text.count('src="data:image/png;base64,') == 2  # one bar chart per protocol


def test_validate_rebuilds_the_stored_tables_and_flags_an_edited_one(results: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    assert main(["results", "validate", str(results)]) == 0
    table = results / "leaderboard.md"
    table.write_text(table.read_text().replace("| melspec |", "| melspec (edited) |"))
    assert main(["results", "validate", str(results)]) == 1
    out = capsys.readouterr().out
    assert f"problem: {table}: differs from the leaderboard rebuilt from the records" in out
    assert "leaderboard.html" not in out  # the page still matches


def _browser():
    """Headless Chromium through Selenium, offline; fails under CI when missing, skips elsewhere."""
    missing = [p for p in CHROMIUM if not Path(p).is_file()]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium (pip install 'evar-bench[test]')")
    if missing:
        reason = f"the page test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMIUM[1]), options=options)


def test_sorting_filtering_links_and_a_visible_table_in_chromium(results: Path, tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page = results / "leaderboard.html"
    driver = _browser()
    try:
        driver.get(page.as_uri())
        rows = lambda: [r.find_elements(By.TAG_NAME, "td") for r in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")]
        header = lambda: [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#board thead th")]
        assert header() == ["Model", "ESC-50", "Avg.", "Params (M)", "GFLOPs / s audio"] and len(rows()) == 2
        scores = lambda: [float(r[1].find_element(By.TAG_NAME, "span").text) for r in rows()]
        esc50 = driver.find_element(By.CSS_SELECTOR, 'th[data-key="esc50"]')
        esc50.click()
        assert driver.find_element(By.CSS_SELECTOR, 'th[data-key="esc50"]').get_attribute("aria-sort") == "descending"
        assert scores() == sorted(scores(), reverse=True)
        driver.find_element(By.CSS_SELECTOR, 'th[data-key="params"]').click()
        assert [r[0].text for r in rows()] == ["byola", "melspec"]  # 600,192 parameters first, then melspec's 0
        driver.find_element(By.CSS_SELECTOR, 'th[data-key="model"]').click()
        assert [r[0].text for r in rows()] == ["byola", "melspec"]  # names ascending
        driver.find_element(By.CSS_SELECTOR, 'th[data-key="model"]').click()
        assert [r[0].text for r in rows()] == ["melspec", "byola"]
        link = rows()[0][1].find_element(By.TAG_NAME, "a").get_attribute("href")
        assert link.startswith((results / "records").as_uri()) and Path(link.removeprefix("file://")).is_file()
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        table = driver.find_element(By.ID, "board")
        box = table.rect
        assert table.is_displayed() and box["width"] > 200 and box["height"] > 40
        image = np.asarray(Image.open(shot).convert("L"), dtype=float)
        scale = image.shape[1] / driver.execute_script("return window.innerWidth")
        region = image[int(box["y"] * scale):int((box["y"] + box["height"]) * scale),
                       int(box["x"] * scale):int((box["x"] + box["width"]) * scale)]
        assert region.size and region.std() > 10 and (region < 100).mean() > 0.005  # text drawn, not a blank area
        if os.environ.get("EVAR_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)
        driver.find_element(By.CSS_SELECTOR, 'input[data-group="SER"]').click()  # hide the SER group's tasks
        assert "ESC-50" not in header() and len(rows()[0]) == 4
        Select(driver.find_element(By.ID, "protocol")).select_by_value("knn")
        assert [r[0].text for r in rows()] == ["melspec"] and "knn protocol" in driver.find_element(
            By.CSS_SELECTOR, "#board caption").text
        figures = driver.find_elements(By.CSS_SELECTOR, "#figures figure")
        assert [f.get_attribute("data-protocol") for f in figures if f.is_displayed()] == ["knn"]
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, json.dumps(errors)
    finally:
        driver.quit()
