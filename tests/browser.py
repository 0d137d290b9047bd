"""The browser side of tests/test_web_client.py: the web client in headless Chromium through
Playwright's sync API, one `WebUser` per page, with what the page logged (console errors,
CSP violations, uncaught exceptions) kept for the test to check.

Every wait polls for a condition with a timeout (Playwright's `expect`), never a fixed sleep.
"""

from __future__ import annotations

import re

from playwright.sync_api import BrowserContext, Locator, Page, expect

#: A wait longer than helpers.TIMEOUT: pages and a server share two busy cores.
PAGE_TIMEOUT_MS = 10_000

# Reported by the page itself, so a violation is seen even where Chromium logs none.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`);
});
"""


class WebUser:
    """One page of the web client (in `context`, opened at `url`)."""

    def __init__(self, context: BrowserContext, url: str) -> None:
        context.add_init_script(REPORT_CSP_VIOLATIONS)
        self.page: Page = context.new_page()
        self.page.set_default_timeout(PAGE_TIMEOUT_MS)
        #: Console errors and uncaught exceptions, in order.
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.url = url
        self.page.goto(url)

    def login(
        self,
        nick: str,
        password: str = "",
        register: bool = False,
        email: str = "",
        wait: bool = True,
    ) -> None:
        page = self.page
        page.fill("#nick", nick)
        page.fill("#password", password)
        if register:
            page.check("#register")
            page.fill("#email", email)
        page.click("#connect")
        if wait:
            expect(page.locator("#input")).to_be_visible()
            expect(page.locator("#status")).to_have_attribute("data-state", "connected")

    def type(self, line: str) -> None:
        """Type `line` in the input line and press Enter."""
        self.page.fill("#input", line)
        self.page.press("#input", "Enter")

    def join(self, room: str) -> None:
        self.type(f"/join {room}")
        self.expect_current(room)
        expect(self.members().filter(has_text=re.compile(r"\w"))).not_to_have_count(0)

    def expect_current(self, target: str) -> None:
        expect(self.conversation(target)).to_have_class(re.compile(r"\bcurrent\b"))
        expect(self.page.locator("#log")).to_have_attribute("data-target", target)

    def switch(self, target: str) -> None:
        """Show another conversation, as a click in the side list does."""
        self.conversation(target).locator("button").click()
        self.expect_current(target)

    def conversation(self, target: str) -> Locator:
        return self.page.locator(f'#conversations li[data-target="{target}"]')

    def lines(self, kind: str | None = None) -> Locator:
        selector = "#log .line" + (f'[data-kind="{kind}"]' if kind else "")
        return self.page.locator(selector)

    def said(self, nick: str, text: str, kind: str = "privmsg") -> Locator:
        """The log's lines of `kind` by `nick` whose text is `text`."""
        lines = self.lines(kind).filter(
            has=self.page.locator(".nick", has_text=re.compile(rf"^{re.escape(nick)}$"))
        )
        return lines.filter(
            has=self.page.locator(".text", has_text=re.compile(rf"^{re.escape(text)}$"))
        )

    def expect_said(self, nick: str, text: str, kind: str = "privmsg") -> None:
        expect(self.said(nick, text, kind)).to_have_count(1)

    def members(self) -> Locator:
        return self.page.locator("#members li[data-nick]")

    def texts(self, kind: str = "privmsg") -> list[str]:
        return self.lines(kind).locator(".text").all_inner_texts()
