"""The web page in headless Debian chromium (Playwright): streaming chat, the session kept
across reloads, the translate panel when a plugin serves /v1/translate, nothing external."""

from typing import Literal

import pytest
from pydantic import BaseModel

from sigerlm import hookimpl

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class TranslateIn(BaseModel):
    texts: list[str]
    direction: Literal["abl-ind", "ind-abl"]


class FakeLampung:
    """Stands in for sigerlm-lampung's routes; uses app_state as that plugin will."""

    @hookimpl(optionalhook=True)
    def register_routes(self, router, app_state):
        @router.post("/v1/translate")
        def translate(body: TranslateIn) -> dict:
            extra = app_state.generate(body.texts[0], max_new_tokens=2)  # through the shared scheduler
            assert isinstance(extra, str)
            return {
                "results": [
                    {"translation": f"[{body.direction}] {t[::-1]}", "stage": "lookup", "confidence": 0.9}
                    for t in body.texts
                ]
            }


def build(model_dir, db, plugins=()):
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings
    from sigerlm_testkit import add_plugin

    pm = make_plugin_manager(load="none")
    for plugin in plugins:
        add_plugin(pm, plugin, type(plugin).__name__)
    return create_app(ServeSettings(model_dir=str(model_dir), db=str(db)), pm)


@pytest.fixture(scope="module")
def browser():
    import os

    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is missing: run plugins/serving/scripts/install-browser.sh")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def test_chat_page_streams_keeps_the_session_and_translates(browser, serve_app, model_dir, tmp_path):
    from playwright.sync_api import expect

    app = build(model_dir, tmp_path / "b.db", [FakeLampung()])
    server = serve_app(app)
    page = browser.new_page()
    problems, requests = [], []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    chat_bodies = []
    page.on("request", lambda r: r.url.endswith("/v1/chat") and chat_bodies.append(r.post_data_json))
    page.goto(server.url + "/")
    expect(page.locator("#model")).to_have_text("SIGER")

    page.fill("#input", "Halo, apa kabar?")
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("tokens")
    sid = page.evaluate("localStorage.getItem('siger.session')")
    assert chat_bodies[0]["stream"] is True and "session_id" not in chat_bodies[0]  # the reply was streamed (SSE)
    stored = app.state.siger.store.messages(sid)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert page.locator("#messages li").nth(0).text_content() == stored[0]["content"]
    assert page.locator("#messages li").nth(1).text_content() == stored[1]["content"]

    page.reload()
    expect(page.locator("#messages li")).to_have_count(2)
    page.fill("#input", "Lagi")
    page.press("#input", "Enter")
    expect(page.locator("#messages li.assistant")).to_have_count(2)
    expect(page.locator("#send")).to_be_enabled()
    assert page.evaluate("localStorage.getItem('siger.session')") == sid == chat_bodies[1]["session_id"]
    assert len(app.state.siger.store.messages(sid)) == 4

    assert page.is_visible("#translate-panel")
    assert page.locator("#translate-direction option").all_inner_texts() == ["abl-ind", "ind-abl"]
    page.fill("#translate-input", "tabik pun\nnyak haga")
    page.select_option("#translate-direction", "ind-abl")
    page.click("#translate-send")
    expect(page.locator("#translations li")).to_have_count(2)
    first = page.locator("#translations li").first.inner_text()
    assert "[ind-abl] nup kibat" in first and "stage lookup" in first
    page.screenshot(path=str(tmp_path / "page.png"))

    page.click("#new-chat")
    assert page.locator("#messages li").count() == 0
    assert page.evaluate("localStorage.getItem('siger.session')") is None
    assert not problems, problems
    assert all(u.startswith(server.url) for u in requests), [u for u in requests if not u.startswith(server.url)]


def test_no_translate_panel_without_the_route(browser, serve_app, model_dir, tmp_path):
    from playwright.sync_api import expect

    server = serve_app(build(model_dir, tmp_path / "c.db"))
    page = browser.new_page()
    page.goto(server.url + "/")
    expect(page.locator("#status")).to_have_text("ready")
    page.wait_for_timeout(300)
    assert not page.is_visible("#translate-panel")
