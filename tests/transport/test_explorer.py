"""The explorer in a real browser: Debian's Chromium, driven by Selenium through chromium-driver, against the real
server's HTTP port. Each page is loaded from a shareable URL and checked for what a person would look at; a screenshot
of each is saved (to $EMBEDSVC_SCREENSHOTS when set: that is how docs/images/ is made).

Skipped when Chromium or its driver is missing, unless EMBEDSVC_REQUIRE_BROWSER=1 (.ci/run installs both and sets
it, so CI never skips these)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from embedsvc.client import Client
from tests.helpers import wait_for
from tests.prompted import PROMPTS, prompted_dir, settings_for

__all__ = ["prompted_dir"]  # a fixture of tests/prompted.py

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

if not (CHROMIUM and DRIVER):
    if os.environ.get("EMBEDSVC_REQUIRE_BROWSER") == "1":
        raise RuntimeError("EMBEDSVC_REQUIRE_BROWSER=1 but chromium / chromedriver are not installed")
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("EMBEDSVC_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait(what: Callable[[], Any], timeout: float = 60) -> Any:
    """What the page shows once it shows it (polled with a deadline). An element the page re-rendered between
    finding it and reading it (the operations page refreshes its table) is read again at the next poll."""
    from selenium.common.exceptions import StaleElementReferenceException

    def shown() -> Any:
        try:
            return what()
        except StaleElementReferenceException:
            return None

    return wait_for(shown, timeout, "the page to get there", every=0.1)


def open_page(browser: Any, url: str) -> None:
    browser.get(url)
    wait(lambda: browser.execute_script("return document.body.dataset.ready === '1'"))


def error_text(browser: Any) -> str:
    box = browser.find_element(By.ID, "error")
    return "" if box.get_attribute("hidden") is not None else box.text


def test_arithmetic_page_shows_queen(browser: Any, http_url: str, shots: Path) -> None:
    open_page(browser, f"{http_url}/explorer/?model=minilm-static&expr={quote('king - man + woman')}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#arith-hits tbody tr")
    assert rows and rows[0].get_attribute("data-word") == "queen", error_text(browser)
    assert rows[0].find_elements(By.CSS_SELECTOR, ".bar"), "each term's contribution is drawn"
    browser.save_screenshot(str(shots / "explorer-arithmetic.png"))
    rows[1].click()  # a hit becomes a term
    wait(lambda: "+ monarch" in browser.find_element(By.ID, "arith-expr").get_attribute("value"))
    wait(lambda: "monarch" in browser.current_url)


def test_arithmetic_page_shows_api_errors(browser: Any, http_url: str) -> None:
    open_page(browser, f"{http_url}/explorer/?model=minilm-static&expr=qqqzzzq")
    assert "OUT_OF_VOCABULARY" in error_text(browser) and "qqqzzzq" in error_text(browser)


def test_map_page_draws_one_point_per_word(browser: Any, http_url: str, shots: Path) -> None:
    words = "king queen man woman prince princess paris france berlin germany rome italy"
    url = (
        f"{http_url}/explorer/?page=map&source=words&model=minilm-static&words={quote(words)}"
        f"&colour=clusters&k=3&expr={quote('king - man + woman')}"
    )
    open_page(browser, url)
    points = browser.find_elements(By.CSS_SELECTOR, "#map-svg circle.point")
    assert len(points) == len(words.split()), error_text(browser)
    assert {p.get_attribute("data-label") for p in points} == set(words.split())
    assert len(browser.find_elements(By.CSS_SELECTOR, "#map-svg circle.query")) == 1
    assert "PC1" in browser.find_element(By.ID, "map-info").text
    assert len({p.get_attribute("fill") for p in points}) == 3  # three clusters, three colours
    browser.save_screenshot(str(shots / "explorer-map.png"))
    grouped = quote("king:royal queen:royal paris:city rome:city")
    open_page(browser, f"{http_url}/explorer/?page=map&source=words&model=minilm-static&words={grouped}&colour=none")
    points = browser.find_elements(By.CSS_SELECTOR, "#map-svg circle.point")
    fills = {p.get_attribute("data-label"): p.get_attribute("fill") for p in points}
    assert fills["king"] == fills["queen"] != fills["paris"] == fills["rome"], error_text(browser)


def test_pages_open_on_their_default_view(browser: Any, http_url: str) -> None:
    """A page opened from its tab (no view in the URL) shows its default view, not an empty box waiting for a click."""
    open_page(browser, f"{http_url}/explorer/?page=map")
    words = browser.find_element(By.ID, "map-words").get_attribute("value").split()
    points = browser.find_elements(By.CSS_SELECTOR, "#map-svg circle.point")
    assert len(words) == 12 and len(points) == len(words), error_text(browser)
    assert "page=map" in browser.current_url and "source=words" in browser.current_url  # and it is shareable
    open_page(browser, f"{http_url}/explorer/?page=latent")
    manifold = "return [...document.querySelectorAll('#manifold-grid img')].filter(i => i.naturalWidth > 0).length"
    assert wait(lambda: browser.execute_script(manifold) == 49), error_text(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#latent-grid img")) == 16


def test_latent_page_decodes_and_interpolates(browser: Any, http_url: str, target: str, shots: Path) -> None:
    with Client(target) as c:  # a stored direction to traverse
        rng = np.random.default_rng(0)
        c.create_direction(
            "mnist-vae",
            "explorer-test",
            from_latents=list(rng.normal(size=(4, 16)).astype(np.float32)),
            to_latents=list(rng.normal(1.0, 1.0, size=(4, 16)).astype(np.float32)),
            from_label="low",
            to_label="high",
            replace=True,
        )
    open_page(browser, f"{http_url}/explorer/?page=latent&vae=mnist-vae&seed=7")
    loaded = (
        "return [...document.querySelectorAll('#latent-grid img')].filter(i => i.complete && i.naturalWidth > 0).length"
    )
    assert wait(lambda: browser.execute_script(loaded) == 16), error_text(browser)
    browser.find_element(By.ID, "interp-go").click()
    wait(lambda: (browser.find_element(By.ID, "interp-frame").get_attribute("src") or "").startswith("data:image/png"))
    first = browser.find_element(By.ID, "interp-frame").get_attribute("src")
    browser.execute_script(
        "const s = document.getElementById('interp-slider'); s.value = s.max; s.dispatchEvent(new Event('input'));"
    )
    last = browser.find_element(By.ID, "interp-frame").get_attribute("src")
    assert last != first, "the slider changes the interpolated frame"
    manifold = "return [...document.querySelectorAll('#manifold-grid img')].filter(i => i.naturalWidth > 0).length"
    assert wait(lambda: browser.execute_script(manifold) == 49), error_text(browser)  # drawn on load, no click
    browser.find_element(By.ID, "trav-go").click()
    wait(lambda: (browser.find_element(By.ID, "trav-frame").get_attribute("src") or "").startswith("data:image/png"))
    middle = browser.find_element(By.ID, "trav-frame").get_attribute("src")
    browser.execute_script(
        "const s = document.getElementById('trav-slider'); s.value = 0; s.dispatchEvent(new Event('input'));"
    )
    assert browser.find_element(By.ID, "trav-frame").get_attribute("src") != middle
    assert browser.find_element(By.ID, "trav-strength").text == "strength -2"
    browser.find_element(By.ID, "draw-as-b").click()  # the (empty) drawing becomes B
    wait(lambda: browser.find_element(By.ID, "interp-b").get_attribute("src").startswith("data:image/png"))
    browser.find_element(By.ID, "reconstruct-go").click()
    wait(lambda: (browser.find_element(By.ID, "recon-out").get_attribute("src") or "").startswith("data:image/png"))
    assert not error_text(browser)
    browser.save_screenshot(str(shots / "explorer-latent.png"))
    with Client(target) as c:
        c.delete_direction("mnist-vae", "explorer-test")


def test_latent_page_offers_only_what_the_model_does(browser: Any, http_url: str) -> None:
    """ModelInfo.latent_operations decides the controls: an autoencoder has no prior (no Sample, no manifold of samples)
    and cannot inpaint, but encodes a drawing, reconstructs it and interpolates; the GAN offers everything."""

    def shown(element_id: str) -> bool:
        return bool(browser.execute_script(f"return document.getElementById('{element_id}').offsetParent !== null"))

    open_page(browser, f"{http_url}/explorer/?page=latent&vae=mnist-ae")
    assert wait(lambda: "offers: decode, encode" in browser.find_element(By.ID, "latent-offers").text)
    assert not shown("sample-go") and not shown("latent-grid") and not shown("inpaint-go")
    assert shown("reconstruct-go") and shown("interp-go")
    assert not browser.find_elements(By.CSS_SELECTOR, "#latent-grid img") and not error_text(browser)
    browser.find_element(By.ID, "draw-as-a").click()
    browser.find_element(By.ID, "draw-as-b").click()
    wait(lambda: (browser.find_element(By.ID, "interp-b").get_attribute("src") or "").startswith("data:image/png"))
    wait(lambda: (browser.find_element(By.ID, "interp-a").get_attribute("src") or "").startswith("data:image/png"))
    browser.find_element(By.ID, "interp-go").click()
    wait(lambda: (browser.find_element(By.ID, "interp-frame").get_attribute("src") or "").startswith("data:image/png"))
    assert not error_text(browser)
    open_page(browser, f"{http_url}/explorer/?page=latent&vae=mnist-gan&seed=3")
    loaded = "return [...document.querySelectorAll('#latent-grid img')].filter(i => i.naturalWidth > 0).length"
    assert wait(lambda: browser.execute_script(loaded) == 16), error_text(browser)
    assert shown("sample-go") and shown("inpaint-go") and shown("reconstruct-go")


def test_search_page_shows_hits(browser: Any, http_url: str, target: str, shots: Path) -> None:
    with Client(target) as c:
        c.create_collection("explorer-notes", model="minilm")
        texts = ["The cat sat on the mat", "A kitten plays with yarn", "Stocks fell sharply on Monday"]
        c.upsert(
            "explorer-notes",
            ["cat", "kitten", "stocks"],
            inputs=texts,
            metadata=[{"year": 2023}, {"year": 2024}, {"year": 2024}],
        )
    try:
        open_page(
            browser, f"{http_url}/explorer/?page=search&collection=explorer-notes&q=pets&filter={quote('year >= 2024')}"
        )
        rows = browser.find_elements(By.CSS_SELECTOR, "#search-hits tr.result")
        assert [r.find_element(By.CSS_SELECTOR, ".id").text for r in rows] == ["kitten", "stocks"], error_text(browser)
        assert '"year":2024' in rows[0].find_element(By.CSS_SELECTOR, ".meta").text
        assert browser.find_element(By.ID, "search-report").text.startswith("mode: dense")
        browser.save_screenshot(str(shots / "explorer-search.png"))
        # Keyword (BM25) mode from the URL: only the text with the words, each hit explained.
        open_page(browser, f"{http_url}/explorer/?page=search&collection=explorer-notes&q=stocks+fell&mode=keyword")
        rows = browser.find_elements(By.CSS_SELECTOR, "#search-hits tr.result")
        assert [r.find_element(By.CSS_SELECTOR, ".id").text for r in rows] == ["stocks"], error_text(browser)
        assert rows[0].find_element(By.CSS_SELECTOR, ".why").text.startswith("keyword #1")
        assert "mode: keyword, keywords in english" in browser.find_element(By.ID, "search-report").text
        # Switched to hybrid in the form: every text ranked, the keyword match first, with both sides explained.
        browser.execute_script("document.getElementById('search-mode').value = 'hybrid';")
        browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
        wait(lambda: "mode: hybrid" in browser.find_element(By.ID, "search-report").text)
        rows = browser.find_elements(By.CSS_SELECTOR, "#search-hits tr.result")
        assert rows[0].find_element(By.CSS_SELECTOR, ".id").text == "stocks" and len(rows) == 3, error_text(browser)
        why = rows[0].find_element(By.CSS_SELECTOR, ".why").text
        assert "dense #" in why and "keyword #1" in why
        assert "mode=hybrid" in browser.current_url
        browser.save_screenshot(str(shots / "explorer-search-hybrid.png"))
        # Text arithmetic on the arithmetic page, through the collection bound to the text model.
        expr = quote('"a kitten" + "a cat"')
        open_page(browser, f"{http_url}/explorer/?model=collection:explorer-notes&expr={expr}")
        hits = browser.find_elements(By.CSS_SELECTOR, "#arith-hits tbody tr")
        assert hits and hits[-1].get_attribute("data-word") == "Stocks fell sharply on Monday", error_text(browser)
    finally:
        with Client(target) as c:
            c.delete_collection("explorer-notes")


def test_texts_are_embedded_with_the_chosen_prompt_and_search_shows_the_query_prompt(
    browser: Any, make_server: Any, prompted_dir: Path, tmp_path: Path, shots: Path
) -> None:
    """The map page embeds texts with a text model's default prompt, none, or a named one (ModelInfo.prompts), and
    says which and the space it makes; the search page says which query prompt the collection puts before a text
    query, and the report which one the search applied."""
    models = settings_for(tmp_path, prompted_dir).models
    with make_server(models=models, http_port=0) as (srv, target):
        with Client(target, timeout=120) as c:
            space = c.get_model("e5-default").space
            c.create_collection("explorer-prompted", model="e5-default", metric="cosine")
            c.create_collection("explorer-unprompted", model="e5-default", metric="cosine", query_prompt="")
            c.upsert("explorer-prompted", ["beach", "stocks"], inputs=["a day at the beach", "stocks fell sharply"])
            want = c.embed_texts("e5-default", ["a day at the beach", "the stock market fell"], normalize=True)
        texts = quote("a day at the beach\nthe stock market fell")
        url = f"http://127.0.0.1:{srv.http.port}/explorer/?page=map&source=texts&tmodel=e5-default&texts={texts}"

        def info() -> str:
            return str(browser.find_element(By.ID, "map-info").text)

        open_page(browser, url)
        choices = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#map-prompt option")]
        labels = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#map-prompt option")]
        assert choices == ["", ":none", *sorted(PROMPTS)], error_text(browser)
        assert labels[0] == "default (query)" and labels[2] == 'document ("passage: ")'
        assert len(browser.find_elements(By.CSS_SELECTOR, "#map-svg circle.point")) == 2, error_text(browser)
        assert f"prompt: query (default) · space {want.space}" in info()
        browser.save_screenshot(str(shots / "explorer-map-prompts.png"))
        # None at all (the literal empty prompt): the model's own space; chosen in the form, kept in the URL.
        browser.execute_script("document.getElementById('map-prompt').value = ':none';")
        browser.find_element(By.CSS_SELECTOR, "#map-form button").click()
        wait(lambda: f"prompt: none · space {space}" in info())
        assert "prompt=%3Anone" in browser.current_url and not error_text(browser)
        open_page(browser, url + "&prompt=document")
        assert browser.find_element(By.ID, "map-prompt").get_attribute("value") == "document"
        assert f"prompt: document · space {space};prompt=document" in info(), error_text(browser)

        def query_prompt() -> str:
            return str(browser.find_element(By.ID, "search-prompt").text)

        search = f"http://127.0.0.1:{srv.http.port}/explorer/?page=search&collection=explorer-prompted&q=seaside"
        open_page(browser, search)
        assert query_prompt() == 'query prompt: query ("query: ")', error_text(browser)
        rows = browser.find_elements(By.CSS_SELECTOR, "#search-hits tr.result")
        assert rows and rows[0].find_element(By.CSS_SELECTOR, ".id").text == "beach", error_text(browser)
        assert "query prompt query" in browser.find_element(By.ID, "search-report").text
        browser.execute_script(
            "const s = document.getElementById('search-collection'); s.value = 'explorer-unprompted';"
            "s.dispatchEvent(new Event('change'));"
        )
        assert query_prompt() == "no query prompt"


def test_operations_page_shows_a_reembed_s_progress_and_cancels_it(
    browser: Any, http_url: str, target: str, shots: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from embedsvc.core.collections import reembed

    started, release = threading.Event(), threading.Event()
    agree = reembed.Reembedder._agree

    calls = []

    def held(self: Any, *args: Any, **kwargs: Any) -> None:  # the fill waits in its second step, the first counted
        calls.append(1)
        if len(calls) == 2:
            started.set()
            release.wait(60)
        agree(self, *args, **kwargs)

    monkeypatch.setattr(reembed.Reembedder, "_agree", held)
    monkeypatch.setattr(reembed, "BATCH", 40)
    texts = [f"{w} and the {v}" for w in ("fire", "rain", "police", "australia", "minister") for v in range(40)]
    with Client(target) as c:
        c.create_collection("explorer-ops", model="lee-mean")
        c.upsert("explorer-ops", [f"t{i}" for i in range(len(texts))], inputs=texts)
        snapshot = c.create_snapshot("explorer-ops", wait=True).result
        operation = c.reembed("explorer-ops", model="lee-sif", target_name="explorer-ops-2")
    try:
        assert started.wait(60)
        open_page(browser, f"{http_url}/explorer/?page=operations&collection=explorer-ops")
        rows = browser.find_elements(By.CSS_SELECTOR, "#ops-table tr.operation")
        kinds = [r.get_attribute("data-kind") for r in rows]
        assert kinds == ["reembed", "snapshot"], error_text(browser)
        running = rows[0]
        assert "filling" in running.find_element(By.CSS_SELECTOR, ".stage").text
        assert "explorer-ops-2" in running.find_element(By.CSS_SELECTOR, ".stage").text
        assert running.find_element(By.CSS_SELECTOR, ".progress span").text == f"40 / {len(texts)}"
        assert snapshot.name in rows[1].find_element(By.CSS_SELECTOR, ".outcome").text
        browser.save_screenshot(str(shots / "explorer-operations.png"))
        running.find_element(By.CSS_SELECTOR, "button").click()  # Cancel
        release.set()
        wait(lambda: "CANCELLED" in browser.find_element(By.CSS_SELECTOR, "#ops-table tr.operation .outcome").text)
        assert not error_text(browser)
    finally:
        release.set()
        with Client(target) as c:
            wait_for(lambda: c.get_operation(operation.name).done, 60, "the cancelled re-embed to finish")
            c.delete_snapshot(snapshot.name)
            c.delete_collection("explorer-ops")


def test_pages_work_with_a_key(browser: Any, make_server: Any) -> None:
    """Against a server that needs keys: the page shows the refusal, then works once a key is entered."""
    from embedsvc.settings import ApiKey, AuthSettings, Role
    from embedsvc.transport.auth import key_hash

    key = "explorer-key-0123456789"
    auth = AuthSettings(enabled=True, keys=(ApiKey("reader", Role.READ, key_hash(key)),))
    with make_server(embedded_models=True, models=(), http_port=0, auth=auth) as (srv, _target):
        assert srv.http is not None
        url = f"http://127.0.0.1:{srv.http.port}/explorer/?model=minilm-static&expr=king"
        browser.execute_script("sessionStorage.clear()")
        open_page(browser, url)
        assert "UNAUTHENTICATED" in error_text(browser)
        assert "API key field" in error_text(browser)  # in the page's words (the server sent the hint's id)
        browser.find_element(By.ID, "api-key").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()  # kept in session storage, page reloads
        wait(lambda: browser.execute_script("return document.body.dataset.ready === '1'"))
        wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#arith-hits tbody tr"))
        assert not error_text(browser)
        assert browser.execute_script("return sessionStorage.getItem('embedsvc-key')") == key
        browser.execute_script("sessionStorage.clear()")
