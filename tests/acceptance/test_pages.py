"""The web pages without a browser (``TestClient``): sign-in, sessions and CSRF, the
grid, "my schedule" and its calendar feed, form validation beside the field, security
headers, and that no page refers to anything outside the site."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.acceptance.conftest import World
from tests.acceptance.support import PASSWORD

Client = Callable[[], TestClient]
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: TestClient, who: str, next_path: str = "/app") -> None:
    page = client.get("/login")
    response = client.post(
        "/login",
        data={
            "csrf": csrf_of(page.text),
            "email": f"{who}@example.org",
            "password": PASSWORD,
            "next": next_path,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text[:500]


def error_beside(html: str, field: str) -> str:
    """The error text shown next to ``field`` (its ``e-<field>`` element)."""
    found = re.search(rf'<p class="error" id="e-{field}">(.*?)</p>', html, re.S)
    assert found, f"no error beside {field}"
    return re.sub(r"<[^>]+>", "", found.group(1))


# ---------------------------------------------------------------------- sign-in


def test_root_redirects_to_the_login_page(client_for: Client) -> None:
    client = client_for()
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    page = client.get("/login")
    assert page.status_code == 200
    assert '<label for="f-email">' in page.text and '<label for="f-password">' in page.text


def test_a_page_needs_a_session_and_comes_back_after_signing_in(
    client_for: Client, world: World
) -> None:
    client = client_for()
    target = f"/app/p/{world.site.program_id}/grid"
    response = client.get(target, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")
    login = client.get(response.headers["location"])
    answer = client.post(
        "/login",
        data={
            "csrf": csrf_of(login.text),
            "email": "coordinator@example.org",
            "password": PASSWORD,
            "next": target,
        },
        follow_redirects=False,
    )
    assert answer.headers["location"] == target
    cookies = answer.headers.get_list("set-cookie")
    session_cookies = [c for c in cookies if c.startswith(("rsched_at=", "rsched_rt="))]
    assert len(session_cookies) == 2
    for cookie in session_cookies:
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert client.get(target).status_code == 200


def test_login_errors_are_shown_beside_the_fields(client_for: Client) -> None:
    client = client_for()
    token = csrf_of(client.get("/login").text)
    empty = client.post("/login", data={"csrf": token, "email": "", "password": ""})
    assert empty.status_code == 422
    assert error_beside(empty.text, "email") == "Error: Enter your email address."
    assert error_beside(empty.text, "password") == "Error: Enter your password."
    assert 'aria-invalid="true"' in empty.text

    wrong = client.post(
        "/login",
        data={"csrf": token, "email": "coordinator@example.org", "password": "not-it-at-all"},
    )
    assert wrong.status_code == 401
    assert "Wrong email or password." in wrong.text
    assert 'value="coordinator@example.org"' in wrong.text  # kept, the password is not


def test_an_open_redirect_is_refused(client_for: Client) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        client = client_for()
        token = csrf_of(client.get("/login").text)
        answer = client.post(
            "/login",
            data={
                "csrf": token,
                "email": "coordinator@example.org",
                "password": PASSWORD,
                "next": target,
            },
            follow_redirects=False,
        )
        assert answer.headers["location"] == "/app"


def test_a_form_without_the_csrf_token_is_refused(client_for: Client, world: World) -> None:
    client = client_for()
    client.get("/login")  # the CSRF cookie
    forged = client.post(
        "/login",
        data={"email": "coordinator@example.org", "password": PASSWORD, "csrf": "x" * 64},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    assert "rsched_at=" not in forged.headers.get("set-cookie", "")

    sign_in(client, "resident")
    me = client.get(f"/app/p/{world.site.program_id}/me")
    token = csrf_of(me.text)
    other_site = client.post(
        f"/app/p/{world.site.program_id}/me/feed",
        data={"csrf": token},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    stranger = client_for()  # another browser: its own CSRF cookie
    sign_in(stranger, "resident")
    replayed = stranger.post(f"/app/p/{world.site.program_id}/me/feed", data={"csrf": token})
    assert replayed.status_code == 403


def test_sign_out_ends_the_session(client_for: Client, world: World) -> None:
    client = client_for()
    sign_in(client, "coordinator")
    home = client.get(f"/app/p/{world.site.program_id}")
    out = client.post("/logout", data={"csrf": csrf_of(home.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login?msg=signed_out"
    assert client.get("/app", follow_redirects=False).status_code == 303


def test_navigation_depends_on_the_role(client_for: Client, world: World) -> None:
    coordinator, resident = client_for(), client_for()
    sign_in(coordinator, "coordinator")
    sign_in(resident, "resident")
    pid = world.site.program_id
    managing = coordinator.get(f"/app/p/{pid}").text
    member = resident.get(f"/app/p/{pid}").text
    for link in ("/runs", "/schedules"):
        assert f'href="/app/p/{pid}{link}"' in managing
        assert f'href="/app/p/{pid}{link}"' not in member
    assert f'href="/app/p/{pid}/me"' in member
    # another program's pages answer 404, as if it did not exist
    assert coordinator.get(f"/app/p/{world.site.other_program_id}/grid").status_code == 404
    assert resident.get(f"/app/p/{pid}/runs").status_code in (403, 404)


# ---------------------------------------------------------------------- the grid


def test_the_grid_shows_people_by_days_with_colours_and_half_days(
    client_for: Client, world: World
) -> None:
    client = client_for()
    sign_in(client, "coordinator")
    page = client.get(f"/app/p/{world.site.program_id}/grid")
    assert page.status_code == 200
    html = page.text
    assert html.count('<th scope="col"') >= 29  # the person column and 28 days
    assert len(re.findall(r'<th scope="row" class="person">', html)) == 16
    assert re.search(r'class="shift c\d+"[^>]*>CLINIC_AM<small>AM</small>', html)
    assert re.search(r'class="shift c\d+"[^>]*>CLINIC_PM<small>PM</small>', html)
    assert re.search(r'class="shift c\d+ call"[^>]*>ICU_CALL<small>Call</small>', html)
    assert "Legend" in html and "hard violation" in html
    assert "coverage 100.0 %" in html


def test_grid_filters_by_pgy_and_rotation(client_for: Client, world: World) -> None:
    client = client_for()
    sign_in(client, "coordinator")
    pid = world.site.program_id
    pgy2 = client.get(f"/app/p/{pid}/grid?pgy=2").text
    assert set(re.findall(r'<span class="who">(PGY-\d|faculty)', pgy2)) == {"PGY-2"}
    faculty = client.get(f"/app/p/{pid}/grid?pgy=faculty").text
    assert set(re.findall(r'<span class="who">(PGY-\d|faculty)', faculty)) == {"faculty"}
    icu = client.get(f"/app/p/{pid}/grid?rotation=icu").text
    rows = re.findall(r'<span class="rot">([^<]*)</span>', icu)
    assert rows and all("Intensive care" in r for r in rows)


def test_grid_range_errors_are_shown_beside_the_fields(client_for: Client, world: World) -> None:
    client = client_for()
    sign_in(client, "coordinator")
    pid = world.site.program_id
    bad = client.get(f"/app/p/{pid}/grid?start=01/07/2026")
    assert bad.status_code == 422
    assert error_beside(bad.text, "start") == "Error: Enter a date as YYYY-MM-DD."
    assert 'value="01/07/2026"' in bad.text
    backwards = client.get(f"/app/p/{pid}/grid?start=2026-07-10&end=2026-07-01")
    assert "must not be before" in error_beside(backwards.text, "end")
    too_long = client.get(f"/app/p/{pid}/grid?start=2026-07-01&end=2027-06-30")
    assert "at most" in error_beside(too_long.text, "end")
    pgy = client.get(f"/app/p/{pid}/grid?pgy=9")
    assert "PGY level" in error_beside(pgy.text, "pgy")


def test_breaches_are_marked_on_their_cells_with_rule_value_and_limit(
    client_for: Client, world: World
) -> None:
    """The hand-made draft puts one resident on every slot of two days: the marks sit on
    that resident's cells and say rule, value and limit (on hover and when opened)."""
    client = client_for()
    sign_in(client, "coordinator")
    html = client.get(f"/app/p/{world.site.program_id}/grid?version={world.site.broken}").text
    summary = re.search(r"<strong>(\d+)</strong> violations?, <strong>(\d+)</strong> warn", html)
    assert summary and int(summary.group(1)) > 0
    assert "NO_OVERLAP" in html
    marked = re.findall(r'<details class="mark"><summary title="([^"]*)">', html)
    assert marked
    assert any(re.search(r"CONTINUOUS_24_4: value [\d.]+, limit [\d.]+", t) for t in marked)
    assert not any("value ," in t for t in marked)  # rules without a measure say none
    opened = re.findall(r'<div class="pop"><p><strong>(\w+)</strong> \((violation|warning)\)', html)
    assert opened
    assert re.search(r'<td class="(we )?v">', html)
    assert "Every breach found by the validator" in html
    # the resident put everywhere carries the marks on their own row
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r'<th scope="row" class="person">([^<]+?) <span(.*?)</tr>', html, re.S)
    }
    assert '<details class="mark">' in rows["Resident 01"]


def test_residents_read_the_active_schedule_only(client_for: Client, world: World) -> None:
    client = client_for()
    sign_in(client, "resident")
    pid = world.site.program_id
    grid = client.get(f"/app/p/{pid}/grid").text
    assert "active</span> version" in grid
    assert world.site.draft is not None
    assert world.site.draft not in grid  # drafts are not offered
    assert client.get(f"/app/p/{pid}/grid?version={world.site.draft}").status_code == 404
    assert 'name="rotation"' not in grid  # rotations are the coordinators' business


# ---------------------------------------------------------------------- my schedule


def test_my_schedule_lists_my_shifts_and_makes_a_calendar_link(
    client_for: Client, world: World
) -> None:
    client = client_for()
    sign_in(client, "resident")
    pid = world.site.program_id
    page = client.get(f"/app/p/{pid}/me")
    assert page.status_code == 200
    shifts = re.findall(r'<tr>\s*<th scope="row">(\w{3} \d{4}-\d\d-\d\d)</th>', page.text)
    assert shifts, "the resident has shifts in the published schedule"
    assert len(re.findall(r'<th scope="row" class="person">', page.text)) == 1

    made = client.post(f"/app/p/{pid}/me/feed", data={"csrf": csrf_of(page.text)})
    assert made.status_code == 200
    url = re.search(r'id="feed-url" class="url" type="text" readonly value="([^"]+)"', made.text)
    assert url and "/feeds/" in url.group(1)
    feed = client.get(url.group(1).replace("http://testserver", ""))
    assert feed.status_code == 200 and "BEGIN:VCALENDAR" in feed.text
    assert feed.text.count("BEGIN:VEVENT") == len(shifts)

    revoked = client.post(
        f"/app/p/{pid}/me/feed/revoke", data={"csrf": csrf_of(made.text)}, follow_redirects=False
    )
    assert revoked.status_code == 303
    assert client.get(url.group(1).replace("http://testserver", "")).status_code == 404


def test_coordinators_have_no_my_schedule(client_for: Client, world: World) -> None:
    client = client_for()
    sign_in(client, "coordinator")
    assert client.get(f"/app/p/{world.site.program_id}/me").status_code == 404


# ---------------------------------------------------------------------- the site


def test_pages_send_security_headers_and_refer_to_nothing_outside(
    client_for: Client, world: World
) -> None:
    client = client_for()
    sign_in(client, "coordinator")
    pid = world.site.program_id
    for path in ("/login", "/app", f"/app/p/{pid}", f"/app/p/{pid}/grid"):
        page = client.get(path)
        assert page.status_code == 200, path
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
        assert "app;dur=" in page.headers["server-timing"]
        assert '<html lang="en">' in page.text
        assert 'name="viewport"' in page.text
        links = re.findall(r'(?:src|href|action)="([^"]+)"', page.text)
        outside = [u for u in links if not u.startswith(("/", "#"))]
        assert outside == [], f"{path} refers outside the site: {outside}"
        assert "<script>" not in page.text and " style=" not in page.text  # CSP: no inline


def test_static_files_are_served_locally_with_caching(client_for: Client) -> None:
    client = client_for()
    page = client.get("/login").text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert "max-age" in response.headers["cache-control"]
        again = client.get(asset, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    assert client.get("/static/../core.py").status_code == 404
    assert client.get("/static/nope.js").status_code == 404


def test_page_routes_stay_out_of_the_api_document(client_for: Client) -> None:
    client = client_for()
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith(("/app", "/login", "/static"))]
