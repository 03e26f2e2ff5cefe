"""End to end in headless Chromium against a real server with a worker: a coordinator
signs in (with the keyboard), starts a run on the ``small`` program, watches it finish
through the live event stream, reads the grid, publishes the draft through the token flow
and opens the breach marks of a draft that breaks rules; a resident on a phone-sized
screen sees their schedule, makes a calendar link, and requests a swap. Screenshots go to
``tests/acceptance/artifacts/``.

Every request the browser makes must go to the server under test (no external network:
all assets are local), and every visited page passes a small accessibility check (one
``h1``, a language, a label for every form field, a name for every image)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import LiveServer
from tests.acceptance.support import PASSWORD

pytestmark = pytest.mark.slow

A11Y_CHECK = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push('no lang on <html>');
  if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby');
    if (!named) problems.push('unlabelled ' + el.tagName + ' ' + (el.name || el.id));
  }
  for (const el of document.querySelectorAll('img, svg[role=img]')) {
    const named = el.getAttribute('alt') || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby') || el.querySelector('title');
    if (!named) problems.push('unnamed image');
  }
  for (const b of document.querySelectorAll('button')) {
    if (!b.textContent.trim() && !b.getAttribute('aria-label')) problems.push('unnamed button');
  }
  return problems;
}"""


WATCH_STATE = """document.addEventListener('DOMContentLoaded', () => {
  const el = document.querySelector('#live [data-field=state]');
  if (!el) return;
  new MutationObserver(() => {
    const seen = JSON.parse(sessionStorage.getItem('seen') || '[]');
    seen.push(el.textContent);
    sessionStorage.setItem('seen', JSON.stringify(seen));
  }).observe(el, {childList: true, characterData: true, subtree: true});
});"""
"""Records in the tab's session storage every state the event stream writes on the page."""


class Journey:
    """One browser context: its page, the requests it made, and the screenshots."""

    def __init__(self, browser: Any, server: LiveServer, shots: Path, **context: Any) -> None:
        self.server = server
        self.shots = shots
        self.context = browser.new_context(**context)
        self.outside: list[str] = []
        self.context.route("**/*", self._guard)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)

    def _guard(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.server.url + "/"):
            route.continue_()
        else:  # nothing may leave the site: record it and refuse it
            self.outside.append(url)
            route.abort()

    def goto(self, path: str) -> None:
        self.page.goto(self.server.url + path)

    def check_page(self) -> None:
        problems = self.page.evaluate(A11Y_CHECK)
        assert problems == [], f"{self.page.url}: {problems}"

    def shot(self, name: str) -> None:
        self.check_page()
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def sign_in(self, who: str) -> None:
        self.goto("/")
        assert self.page.url.startswith(self.server.url + "/login")
        self.page.get_by_label("Email address").fill(f"{who}@example.org")
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(r".*/app/p/[^/]+$"))

    def sign_out(self) -> None:
        self.page.get_by_role("button", name="Sign out").click()
        self.page.wait_for_url(re.compile(r".*/login\?msg=signed_out$"))

    def close(self) -> None:
        self.context.close()
        assert self.outside == [], f"requests outside the site: {self.outside}"


@pytest.fixture
def journey(browser: Any, live_server: LiveServer, artifacts: Path) -> Iterator[Any]:
    made: list[Journey] = []

    def make(**context: Any) -> Journey:
        j = Journey(browser, live_server, artifacts, **context)
        made.append(j)
        return j

    yield make
    for j in made:
        j.close()


def test_coordinator_runs_publishes_and_a_resident_requests_a_swap(
    journey: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    site = live_server.site
    coord = journey(viewport={"width": 1366, "height": 900})
    page = coord.page

    # -- sign in with the keyboard only: the skip link comes first, then the fields
    coord.goto("/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "f-email":
            break
    page.keyboard.type("coordinator@example.org")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf".*/app/p/{site.program_id}$"))
    coord.shot("01-coordinator-program")

    # -- start a run on the small program and watch it finish (live event stream)
    page.get_by_role("navigation").get_by_role("link", name="Runs", exact=True).click()
    page.get_by_label("Program", exact=True).select_option(site.program_id)
    page.get_by_label("Solver", exact=True).select_option("cp_sat")
    page.get_by_label("Time limit (seconds)").fill("20")
    coord.shot("02-start-run")
    page.add_init_script(WATCH_STATE)
    page.get_by_role("button", name="Start the run").click()
    page.wait_for_url(re.compile(r".*/app/runs/[0-9a-f]+\?msg=run_started$"))
    first_state = page.locator("#run-state").inner_text()
    coord.shot("03-run-live")
    expect(page.locator("#run-state")).to_have_text("succeeded", timeout=120_000)
    if first_state in ("queued", "running"):  # the page followed the event stream
        seen = page.evaluate("JSON.parse(sessionStorage.getItem('seen') || '[]')")
        assert seen, "no progress event reached the page"
        page.wait_for_url(re.compile(r".*/app/runs/[0-9a-f]+$"))  # reloaded on `done`
    expect(page.get_by_role("heading", name=re.compile("^Result: schedule"))).to_be_visible()
    assert page.locator("#by-rule").is_visible()
    assert page.locator("svg.chart").count() >= 1  # fairness per cohort
    objective = page.locator("[data-field=objective]").inner_text()
    assert objective != "—"
    coord.shot("04-run-finished")

    # -- the grid of the draft
    page.get_by_role("link", name="View the grid").click()
    expect(page.locator("table.grid")).to_be_visible()
    assert page.locator("table.grid tbody tr").count() == 16
    assert page.locator("table.grid .shift small", has_text="AM").count() > 0
    assert page.locator("table.grid .shift small", has_text="PM").count() > 0
    assert page.locator("table.grid .shift.call").count() > 0
    page.get_by_label("PGY level").select_option("2")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("table.grid tbody tr")).to_have_count(4)
    coord.shot("05-grid-pgy2")

    # -- review the draft and publish it through the token flow
    page.get_by_role("link", name="review and publish this draft").click()
    expect(page.locator("#verdict")).to_have_text("ok")
    coord.shot("06-draft-diff")
    page.get_by_role("button", name="Publish…").click()
    expect(page.get_by_role("heading", name=re.compile("^Publish schedule"))).to_be_visible()
    coord.shot("07-publish-confirm")
    page.get_by_role("button", name="Publish now").click()
    page.wait_for_url(re.compile(r".*\?msg=published$"))
    expect(page.get_by_role("status")).to_contain_text("Published")
    expect(page.locator("h1 .badge")).to_have_text("active")
    coord.shot("08-published")

    # -- a draft that breaks rules: each mark opens on click or Enter and shows the rule,
    #    the measured value and the limit; Escape closes it
    coord.goto(f"/app/p/{site.program_id}/grid?version={site.broken}")
    mark = page.locator("table.grid details.mark", has=page.locator("summary[title*=limit]"))
    mark = mark.first
    mark.locator("summary").click()
    pop = mark.locator(".pop")
    expect(pop).to_be_visible()
    expect(pop).to_contain_text(re.compile(r"value [\d.]+, limit [\d.]+"))
    coord.shot("09-grid-breach-open")
    page.keyboard.press("Escape")
    expect(pop).to_be_hidden()
    mark.locator("summary").focus()
    page.keyboard.press("Enter")
    expect(pop).to_be_visible()
    page.keyboard.press("Escape")
    coord.sign_out()

    # -- a resident on a phone: their schedule, a calendar link, a swap request
    res = journey(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    rpage = res.page
    res.sign_in("resident")
    rpage.get_by_role("link", name="My schedule").first.click()
    shifts = rpage.locator("#my-shifts tbody tr")
    expect(shifts.first).to_be_visible()
    assert shifts.count() >= 1 and "No shifts" not in shifts.first.inner_text()
    rpage.get_by_role("button", name="Make a new calendar link").click()
    feed = rpage.get_by_label("Calendar link")
    expect(feed).to_have_value(re.compile(r"^http://127\.0\.0\.1:\d+/feeds/.+\.ics$"))
    rpage.wait_for_load_state("load")  # the stylesheet applied
    assert rpage.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # no sideways page
    res.shot("10-resident-my-schedule-phone")

    request_a_swap(res)
    res.sign_out()


def request_a_swap(res: Any) -> None:
    """From "my schedule": pick a shift, pick one of the candidates offered, send."""
    from playwright.sync_api import expect

    rpage = res.page
    rpage.locator("#my-shifts tbody tr a", has_text="Swap").last.click()
    expect(rpage.get_by_role("heading", name=re.compile("^Swap"))).to_be_visible()
    options = rpage.locator("input[name=candidate]")
    expect(options.first).to_be_visible()
    options.first.check()
    res.shot("11-swap-candidates-phone")
    rpage.get_by_role("button", name="Send the request").click()
    rpage.wait_for_url(re.compile(r".*\?msg=swap_requested$"))
    expect(rpage.get_by_role("status")).to_contain_text("swap request")
    res.shot("12-swap-requested-phone")
