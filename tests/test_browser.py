"""The web page in a real browser: Debian's Chromium driven by Playwright writes a 七律 through the
page, in vertical layout, and copies it. Skipped where /usr/bin/chromium is missing, except in CI."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a live server and Chromium

CHROMIUM = Path(os.environ.get("TANGSHI_CHROMIUM", "/usr/bin/chromium"))
# as root in a closed network Chromium needs no sandbox and no background connections
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    import uvicorn

    from tangshi.serve import create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_the_page_writes_a_qilv_in_vertical_layout(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone's width
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
            page = context.new_page()
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30000)
            # the page's choices and defaults are the options' (tangshi.options)
            from tangshi.options import BY_NAME, MAX_BEGIN

            assert page.input_value("#form") == BY_NAME["form"].default
            assert page.input_value("#tones") == BY_NAME["tones"].default
            assert float(page.input_value("#temperature")) == BY_NAME["temperature"].default
            assert page.evaluate("[...document.querySelectorAll('#form option')].map(o => o.value)") == list(
                BY_NAME["form"].choices
            )
            assert page.evaluate("document.querySelector('#begin').maxLength") == MAX_BEGIN
            page.fill("#begin", "月")
            page.select_option("#form", "七律")
            page.check("#vertical")
            page.click("#write")
            page.wait_for_selector("body[data-poems='1']", timeout=30000)
            lines = page.locator("#poem .line")
            assert lines.count() == 8
            texts = [lines.nth(i).inner_text() for i in range(8)]
            assert texts[0].startswith("月")
            assert page.locator("#poem").get_attribute("class") == "vertical"
            assert page.evaluate("getComputedStyle(document.querySelector('#poem')).writingMode") == "vertical-rl"
            assert page.locator("#poem .rhyme").count() >= 4  # the even lines' rhymes are marked
            assert "七律" in page.inner_text("#info")
            # no horizontal overflow of the page on a phone
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            page.screenshot(path=str(tmp_path / "qilv.png"), full_page=True)
            shots = os.environ.get("TANGSHI_SCREENSHOTS")
            if shots:
                page.screenshot(path=str(Path(shots) / "qilv-vertical-phone.png"), full_page=True)
            page.click("#copy")
            copied = page.evaluate("navigator.clipboard.readText()")
            assert copied.splitlines()[0].startswith("月") and len(copied.splitlines()) == 4
            first = page.inner_text("#poem")
            page.click("#another")
            page.wait_for_selector("body[data-poems='2']", timeout=30000)
            assert page.inner_text("#poem") != first
            # keywords: each in its planned line, underlined, and the plan shown
            page.fill("#begin", "")
            page.fill("#keywords", "明月 故乡")
            page.select_option("#form", "五绝")
            page.click("#write")
            page.wait_for_selector("body[data-poems='3']", timeout=30000)
            assert page.locator("#poem .kw").count() >= 4 and "明月" in page.inner_text("#poem .line >> nth=0")
            assert "1 明月" in page.inner_text("#plan") and "2 故乡" in page.inner_text("#plan")
            page.fill("#keywords", "")
            # a bad request shows the server's message, naming the field
            page.fill("#begin", "龘")
            page.click("#write")
            page.wait_for_selector("#error:not([hidden])", timeout=30000)
            assert "begin" in page.inner_text("#error") and "龘" in page.inner_text("#error")
        finally:
            browser.close()


def _shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    shots = os.environ.get("TANGSHI_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("width, name", [(1280, "desktop"), (390, "phone")])
def test_co_writing_lock_rewrite_alternatives_undo_and_live_checking(server, tmp_path, width, name):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30000)
            page.fill("#begin", "山")
            page.select_option("#form", "五律")
            page.click("#write")
            page.wait_for_selector("body[data-poems='1']", timeout=30000)
            assert page.is_disabled("#rewrite")  # nothing locked yet
            # lock the first two characters of line 1 and the rhyme of line 2, rewrite the rest
            chars = page.locator("#poem .line >> nth=0").locator(".ch")
            kept = [chars.nth(0).inner_text(), chars.nth(1).inner_text()]
            chars.nth(0).click()
            chars.nth(1).click()
            rhyme = page.locator("#poem .line >> nth=1").locator(".ch >> nth=4")
            kept.append(rhyme.inner_text())
            rhyme.click()
            assert page.locator("#poem .locked").count() == 3
            before = page.inner_text("#poem .text >> nth=2")
            _shot(page, tmp_path, f"lock-{name}")
            page.click("#rewrite")
            page.wait_for_selector("body[data-poems='2']", timeout=30000)
            line1, line2 = (page.locator(f"#poem .line >> nth={i}").locator(".ch") for i in (0, 1))
            assert [line1.nth(0).inner_text(), line1.nth(1).inner_text(), line2.nth(4).inner_text()] == kept
            assert page.locator("#poem .locked").count() == 3  # still locked for the next rewrite
            assert "五律" in page.inner_text("#info")
            rewritten = page.inner_text("#poem")
            # other lines for line 3: pick one; undo and redo
            page.locator("#poem .alt >> nth=2").click()
            page.wait_for_selector("body[data-alts='1']", timeout=30000)
            options = page.locator("#alts button")
            assert options.count() >= 3
            chosen = options.nth(0).inner_text()
            _shot(page, tmp_path, f"alternatives-{name}")
            options.nth(0).click()
            page.wait_for_selector("body[data-swaps='1']", timeout=30000)
            assert page.locator("#poem .line >> nth=2").locator(".ch").all_inner_texts() == list(chosen)
            page.click("#undo")
            assert page.inner_text("#poem") == rewritten
            page.click("#redo")
            assert "".join(page.locator("#poem .line >> nth=2").locator(".ch").all_inner_texts()) == chosen
            assert before  # the first poem's third line was there to be replaced
            # typing: broken rules are marked as one types, with characters that would keep them
            page.fill("#own", "床前明月光，疑是地上雪。举头望明月，低头思故乡。")
            page.wait_for_selector("#poem .broken", timeout=30000)
            problems = page.inner_text("#problems")
            assert "'雪'" in problems and "霜" in problems
            assert page.locator("#poem .broken").count() >= 3
            _shot(page, tmp_path, f"checking-{name}")
            page.fill("#own", "床前明月光，疑是地上霜。举头望明月，低头思故乡。")
            page.wait_for_function("!document.querySelector('#problems').innerText.includes('雪')", timeout=30000)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        finally:
            browser.close()


def test_the_page_writes_a_ci_by_its_cipai(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30000)
            assert page.locator("#cipais option[value='念奴娇']").count() == 1  # the 词牌 to choose from
            page.fill("#cipai", "浣溪沙")
            page.click("#write")
            page.wait_for_selector("body[data-poems='1']", timeout=30000)
            parts = page.locator("#poem .line.ci")
            assert parts.count() == 2  # 上阕 and 下阕, each with the pattern under it
            assert "上阕" in parts.nth(0).inner_text() and "下阕" in parts.nth(1).inner_text()
            assert page.inner_text("#poem .pattern >> nth=0").startswith("中仄中平中仄平")  # a sentence a row
            assert page.locator("#poem .rhyme").count() == 5 and page.locator("#poem .broken").count() == 0
            info = page.inner_text("#info")
            assert "词牌 浣溪沙" in info and "韵位 5/5" in info
            _shot(page, tmp_path, "ci-huanxisha")
            page.fill("#cipai", "浣溪纱")  # a 词牌 that does not exist: the nearest are named
            page.click("#write")
            page.wait_for_selector("#error:not([hidden])", timeout=30000)
            assert "cipai" in page.inner_text("#error") and "浣溪沙" in page.inner_text("#error")
        finally:
            browser.close()
