"""The pages that change things, without a browser: starting and aborting runs, the event
stream, publishing through the token flow, rollback, swaps and their decisions, and the
operations pages. Bad input is refused beside the field, and a form sent twice (start,
abort, publish, rollback, request, approve, execute) acts once."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date

import pytest
from fastapi.testclient import TestClient

from rsched.db.base import transaction
from rsched.domain import ScheduleStatus
from rsched.services import runs
from rsched.services import schedules as S
from rsched.services import swaps as swap_svc
from rsched.web.grid import version_assignments
from tests.acceptance.conftest import World
from tests.acceptance.support import SETUP
from tests.acceptance.test_pages import csrf_of, error_beside, sign_in

Client = Callable[[], TestClient]


def signed_in(client_for: Client, who: str) -> TestClient:
    client = client_for()
    sign_in(client, who)
    return client


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden field {name}"
    return found.group(1)


def flash(response_location: str) -> str:
    return response_location.rsplit("msg=", 1)[-1]


# ---------------------------------------------------------------------- runs


def run_form(client: TestClient, pid: str, **values: str) -> tuple[str, dict[str, str]]:
    page = client.get(f"/app/p/{pid}/runs").text
    form = {
        "csrf": csrf_of(page),
        "key": hidden(page, "key"),
        "program": pid,
        "algorithm": "greedy",
        "time_limit": "5",
        "workers": "1",
        "seed": "0",
    }
    form.update(values)
    return page, form


def test_the_run_form_shows_each_error_beside_its_field(client_for: Client, world: World) -> None:
    client = signed_in(client_for, "coordinator")
    pid = world.site.program_id
    _, form = run_form(
        client,
        pid,
        time_limit="soon",
        workers="2.5",
        seed="-1",
        algorithm="quantum",
        program=world.site.other_program_id,
    )
    answer = client.post(f"/app/p/{pid}/runs", data=form)
    assert answer.status_code == 422
    assert error_beside(answer.text, "time_limit") == "Error: Enter a number."
    assert error_beside(answer.text, "workers") == "Error: Enter a whole number."
    assert "from 0" in error_beside(answer.text, "seed")
    assert "from the list" in error_beside(answer.text, "algorithm")
    assert "you coordinate" in error_beside(answer.text, "program")
    assert 'value="soon"' in answer.text  # what was typed stays in the field
    _, form = run_form(client, pid, time_limit="0")
    assert "from 1" in error_beside(client.post(f"/app/p/{pid}/runs", data=form).text, "time_limit")
    with world.factory() as s:
        assert runs.list_active(s, actor=SETUP, program_id=pid) == []


def test_a_run_form_sent_twice_queues_one_run_and_an_abort_acts_once(
    client_for: Client, world: World
) -> None:
    client = signed_in(client_for, "coordinator")
    pid = world.site.program_id
    _, form = run_form(client, pid)
    first = client.post(f"/app/p/{pid}/runs", data=form, follow_redirects=False)
    second = client.post(f"/app/p/{pid}/runs", data=form, follow_redirects=False)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    run_path = first.headers["location"].split("?")[0]
    with world.factory() as s:
        active = runs.list_active(s, actor=SETUP, program_id=pid)
    assert [f"/app/runs/{r.id}" for r in active] == [run_path]
    assert (world.data_dir / "backups").is_dir()  # a backup came first

    page = client.get(run_path).text
    assert 'data-events="' in page  # the live panel follows the event stream
    empty = client.post(f"{run_path}/abort", data={"csrf": csrf_of(page), "reason": " "})
    assert empty.status_code == 422
    assert error_beside(empty.text, "reason") == "Error: Say why the run is stopped."
    done = client.post(
        f"{run_path}/abort",
        data={"csrf": csrf_of(page), "reason": "wrong data"},
        follow_redirects=False,
    )
    again = client.post(
        f"{run_path}/abort",
        data={"csrf": csrf_of(page), "reason": "second thoughts"},
        follow_redirects=False,
    )
    assert flash(done.headers["location"]) == "abort_sent"
    assert flash(again.headers["location"]) == "abort_already"
    with world.factory() as s:
        view = runs.get_run(s, actor=SETUP, run_id=run_path.rsplit("/", 1)[-1])
    assert view.state == "aborted" and view.abort_reason == "wrong data"

    # the event stream of a finished run: its figures, then the end
    with client.stream("GET", f"{run_path}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        body = "".join(stream.iter_text())
    events = re.findall(r"event: (\w+)\ndata: (.*)\n", body)
    assert [name for name, _ in events] == ["progress", "done"]
    assert json.loads(events[-1][1])["state"] == "aborted"
    assert client_for().get(f"{run_path}/events").status_code == 401  # signed out


def test_runs_are_for_coordinators(client_for: Client, world: World) -> None:
    resident = signed_in(client_for, "resident")
    pid = world.site.program_id
    assert resident.get(f"/app/p/{pid}/runs").status_code == 404
    outsider = signed_in(client_for, "outsider")
    assert outsider.get(f"/app/p/{pid}/runs").status_code == 404


# ---------------------------------------------------------------------- publishing


def _copy_of_active(world: World) -> str:
    """A draft with the active schedule's assignments (a diff with no churn)."""
    pid = world.site.program_id
    with transaction(world.factory) as s:
        active = S.active_version(s, actor=SETUP, program_id=pid, start=date.min, end=date.max)
        assert active is not None
        pairs = version_assignments(s, pid, active.id)
        return S.save_draft(
            s, actor=SETUP, program_id=pid, assignments=pairs, report_summary=active.report
        )


def test_a_draft_shows_its_diff_and_publishes_once_then_rolls_back_once(
    client_for: Client, world: World
) -> None:
    client = signed_in(client_for, "coordinator")
    pid = world.site.program_id
    with world.factory() as s:
        before = S.active_version(s, actor=SETUP, program_id=pid, start=date.min, end=date.max)
    assert before is not None
    draft = _copy_of_active(world)

    page = client.get(f"/app/p/{pid}/schedules/{draft}").text
    assert re.search(r'id="verdict">ok<', page)
    assert "<dt>Churn</dt><dd>0.0 %" in page
    confirm = client.post(f"/app/p/{pid}/schedules/{draft}/publish", data={"csrf": csrf_of(page)})
    assert confirm.status_code == 200
    form = {"csrf": csrf_of(confirm.text), "token": hidden(confirm.text, "token")}
    url = f"/app/p/{pid}/schedules/{draft}/publish/confirm"
    first = client.post(url, data=form, follow_redirects=False)
    second = client.post(url, data=form, follow_redirects=False)
    assert flash(first.headers["location"]) == "published"
    assert flash(second.headers["location"]) == "already_published"
    with world.factory() as s:
        assert S.get_version(s, actor=SETUP, program_id=pid, version_id=draft).status == "active"
        assert (
            S.get_version(s, actor=SETUP, program_id=pid, version_id=before.id).status
            == ScheduleStatus.SUPERSEDED
        )

    rollback = client.get(f"/app/p/{pid}/rollback").text
    assert hidden(rollback, "expected") == draft
    empty = client.post(
        f"/app/p/{pid}/rollback", data={"csrf": csrf_of(rollback), "expected": draft, "reason": ""}
    )
    assert empty.status_code == 422
    assert "Say why" in error_beside(empty.text, "reason")
    sent = {"csrf": csrf_of(rollback), "expected": draft, "reason": "published by mistake"}
    first = client.post(f"/app/p/{pid}/rollback", data=sent, follow_redirects=False)
    second = client.post(f"/app/p/{pid}/rollback", data=sent, follow_redirects=False)
    assert flash(first.headers["location"]) == "rolled_back"
    assert flash(second.headers["location"]) == "rollback_already"
    with world.factory() as s:
        now = S.active_version(s, actor=SETUP, program_id=pid, start=date.min, end=date.max)
    assert now is not None and now.id == before.id  # exactly one publish undone


def test_a_draft_the_diff_guard_refuses_cannot_be_published(
    client_for: Client, world: World
) -> None:
    client = signed_in(client_for, "coordinator")
    pid, draft = world.site.program_id, world.site.draft
    assert draft is not None
    page = client.get(f"/app/p/{pid}/schedules/{draft}").text
    assert re.search(r'id="verdict">refuse<', page)
    assert "is above the limit" in page
    assert "Publish…" not in page
    assert 'id="people-diff"' in page and "diff-add" in page and "diff-rem" in page
    # forcing the way through: the token is made, the service refuses, nothing changes
    confirm = client.post(f"/app/p/{pid}/schedules/{draft}/publish", data={"csrf": csrf_of(page)})
    form = {"csrf": csrf_of(confirm.text), "token": hidden(confirm.text, "token")}
    refused = client.post(f"/app/p/{pid}/schedules/{draft}/publish/confirm", data=form)
    assert refused.status_code == 409
    assert "Not published" in refused.text and "diff guard refused" in refused.text
    with world.factory() as s:
        assert S.get_version(s, actor=SETUP, program_id=pid, version_id=draft).status == "draft"


def test_a_forged_publish_token_is_refused(client_for: Client, world: World) -> None:
    client = signed_in(client_for, "coordinator")
    pid, draft = world.site.program_id, world.site.draft
    page = client.get(f"/app/p/{pid}/schedules/{draft}").text
    answer = client.post(
        f"/app/p/{pid}/schedules/{draft}/publish/confirm",
        data={"csrf": csrf_of(page), "token": "made-up"},
    )
    assert answer.status_code == 409
    assert "token was refused" in answer.text


# ---------------------------------------------------------------------- swaps


def test_a_resident_requests_a_swap_and_a_coordinator_decides_once(
    client_for: Client, world: World
) -> None:
    pid = world.site.program_id
    resident = signed_in(client_for, "resident")
    me = resident.get(f"/app/p/{pid}/me").text
    links = re.findall(r'href="(/app/p/[^"]+/swaps/new\?slot=[^"]+)"', me)
    assert links, "the resident has shifts to swap"
    offer = resident.get(links[-1].replace("&amp;", "&"))
    assert offer.status_code == 200
    choices = re.findall(r'name="candidate" id="c-\d+" value="([^"]*)"', offer.text)
    assert choices, "someone can take the shift"

    missing = resident.post(
        f"/app/p/{pid}/swaps/new",
        data={
            "csrf": csrf_of(offer.text),
            "slot": hidden(offer.text, "slot"),
            "person": hidden(offer.text, "person"),
            "note": "",
        },
    )
    assert missing.status_code == 422
    assert error_beside(missing.text, "candidate") == "Error: Choose who takes the shift."

    form = {
        "csrf": csrf_of(offer.text),
        "slot": hidden(offer.text, "slot"),
        "person": hidden(offer.text, "person"),
        "candidate": choices[0],
        "note": "family wedding",
    }
    first = resident.post(f"/app/p/{pid}/swaps/new", data=form, follow_redirects=False)
    second = resident.post(f"/app/p/{pid}/swaps/new", data=form, follow_redirects=False)
    assert flash(first.headers["location"]) == "swap_requested"
    assert flash(second.headers["location"]) == "swap_already"
    with world.factory() as s:
        made = swap_svc.list_swaps(s, actor=SETUP, program_id=pid).items
    assert len(made) == 1 and made[0].status == "pending" and made[0].note == "family wedding"
    swap_id = made[0].id

    coordinator = signed_in(client_for, "coordinator")
    listing = coordinator.get(f"/app/p/{pid}/swaps").text
    assert f'id="swap-{swap_id}"' in listing and "Approve" in listing
    decide = {"csrf": csrf_of(listing), "decision": "approve"}
    url = f"/app/p/{pid}/swaps/{swap_id}/decide"
    assert flash(
        coordinator.post(url, data=decide, follow_redirects=False).headers["location"]
    ) == ("swap_decided")
    denied_after = coordinator.post(
        url, data={**decide, "decision": "deny"}, follow_redirects=False
    )
    assert flash(denied_after.headers["location"]) == "swap_already"
    with world.factory() as s:
        assert swap_svc.get_swap(s, actor=SETUP, program_id=pid, swap_id=swap_id).status == (
            "approved"
        )

    execute = f"/app/p/{pid}/swaps/{swap_id}/execute"
    made_now = coordinator.post(execute, data={"csrf": csrf_of(listing)}, follow_redirects=False)
    assert flash(made_now.headers["location"]) == "swap_done", made_now.text[:500]
    repeat = coordinator.post(execute, data={"csrf": csrf_of(listing)}, follow_redirects=False)
    assert flash(repeat.headers["location"]) == "swap_already"
    with world.factory() as s:
        assert swap_svc.get_swap(s, actor=SETUP, program_id=pid, swap_id=swap_id).status == (
            "executed"
        )


def test_swap_pages_keep_to_ones_own(client_for: Client, world: World) -> None:
    pid = world.site.program_id
    faculty = signed_in(client_for, "faculty")
    listing = faculty.get(f"/app/p/{pid}/swaps").text
    assert "No swap requests of yours" in listing or 'class="card swap"' not in listing
    assert faculty.post(
        f"/app/p/{pid}/swaps/nope/decide", data={"csrf": csrf_of(listing), "decision": "approve"}
    ).status_code in (403, 404)


# ---------------------------------------------------------------------- operations


@pytest.mark.parametrize(
    ("who", "status"), [("coordinator", 200), ("admin", 200), ("resident", 403)]
)
def test_the_situation_report_page(client_for: Client, who: str, status: int) -> None:
    client = signed_in(client_for, who)
    page = client.get("/app/ops")
    assert page.status_code == status
    if status == 200:
        for section in ("Do now", "Runs", "Health", "Coverage of the active schedules"):
            assert section in page.text
        assert 'id="runs-by-state"' in page.text


def test_backups_are_listed_for_admins_only(client_for: Client, world: World) -> None:
    assert signed_in(client_for, "coordinator").get("/app/ops/backups").status_code == 403
    page = signed_in(client_for, "admin").get("/app/ops/backups")
    assert page.status_code == 200
    assert 'id="backups"' in page.text
