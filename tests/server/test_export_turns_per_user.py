"""One user holds at most one of the export turns, two of the smart tool's and three of the
superpixel pictures' at once: one viewer's parallel exports (smart-tool requests, pictures) wait
for each other, not for everyone else's."""

from __future__ import annotations

import asyncio
import random

import pytest

from slidelabel.errors import BusyError
from slidelabel.services import exports, smart, tiles
from slidelabel.services.turns import WAITING_PER_HOLDER, Turns
from slidelabel.store.models import Role


def test_a_holder_waits_for_its_own_turn_while_others_take_the_free_one() -> None:
    turns = Turns(2, per_holder=1)

    async def run() -> list[str]:
        taken: list[str] = []

        async def take(holder: str, hold_s: float) -> None:
            async with turns.waiting(5.0, "busy", holder=holder):
                taken.append(holder)
                await asyncio.sleep(hold_s)

        await asyncio.gather(take("a", 0.3), take("a", 0.0), take("b", 0.0))
        return taken

    assert asyncio.run(run()) == ["a", "b", "a"]
    assert turns.take_now() and turns.take_now(), "a turn was not given back"


@pytest.mark.parametrize("trial", range(5))
def test_free_turns_go_round_the_waiting_holders(trial) -> None:
    """Sixteenth attack: a free turn went to whichever waiter looked first, so two clients with
    ten waiting logins each took nearly every turn and a third client's one login waited 9 s (at
    the median; 30 s at most). As the password checks' turns (two, one a client): the greedy
    clients' sixteen requests each (as many as may wait) come first, then the other's one, and the checks take uneven
    times. Its turn comes within the first round (the greedy ones' second turns, then its)."""
    turns, durations = Turns(2, per_holder=1), random.Random(trial)

    async def run() -> list[str]:
        order: list[str] = []

        async def take(holder: str) -> None:
            async with turns.waiting(30.0, "busy", holder=holder):
                order.append(holder)
                await asyncio.sleep(durations.uniform(0.01, 0.05))

        greedy = [asyncio.create_task(take(holder)) for _ in range(WAITING_PER_HOLDER) for holder in ("a", "b")]
        await asyncio.sleep(0.005)
        await asyncio.gather(*greedy, take("c"))
        return order

    order = asyncio.run(run())
    assert order.index("c") <= 4, order


def test_a_holder_past_its_waiting_requests_is_answered_busy_at_once_and_others_still_wait() -> None:
    """Nineteenth attack: one viewer's token sent from 200 addresses kept thousands of exports
    waiting, each looking for its turn every 20 ms: another user's requests waited 22 s, its tiles
    54 s. At most ``waiting_per_holder`` of a holder's requests wait; the next is busy at once."""
    turns = Turns(1, per_holder=1, waiting_per_holder=2)
    assert turns.take_now("a")

    async def run() -> tuple[list[str], float]:
        async def wait(holder: str) -> str:
            try:
                async with turns.waiting(0.5, "busy", holder=holder):
                    return "turn"
            except BusyError:
                return "busy"

        waiting = [asyncio.create_task(wait("a")) for _ in range(2)]
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        third = await wait("a")
        refused_after = asyncio.get_running_loop().time() - started
        other = asyncio.create_task(wait("b"))
        await asyncio.sleep(0.05)
        turns.give_back("a")
        return [third, *await asyncio.gather(*waiting), await other], refused_after

    answers, refused_after = asyncio.run(run())
    assert answers[0] == "busy" and refused_after < 0.4  # at once, not after its 0.5 s wait
    assert answers[1:] == ["turn", "turn", "turn"], answers  # a's two waiters and b's one waited for theirs


def test_a_waiter_that_gives_up_leaves_the_line() -> None:
    turns = Turns(1)
    assert turns.take_now("a")
    with pytest.raises(BusyError):
        with turns.hold(0.05, "busy", holder="b"):
            pass
    turns.give_back("a")
    with turns.hold(0.5, "busy", holder="c"):  # not kept waiting behind b, who left
        pass


# The smart tool's answer past its turn: 404, the slide has no features (the route ran).
@pytest.mark.parametrize("url, turns, ran", [("/labels/summary", "exports", 200), ("/agreement", "exports", 200),
                                             ("/slides/{slide}/shapes/scales?superpixel=1", "smart", 404),
                                             ("/slides/{slide}/superpixels/7/thumbnail.png?size=1024", "pictures",
                                              200), ("/labels/history?user=all&limit=10000", "exports", 200),
                                             # twentieth attack: the predictions CSVs took no turn (60: 49 s of CPU)
                                             ("/export/predictions.csv", "exports", 404),
                                             ("/slides/{slide}/export/predictions.csv", "exports", 404)])
def test_one_users_turns_do_not_keep_another_user_waiting(client, monkeypatch, member_headers, project, slide_row,
                                                           slide_url, url, turns, ran) -> None:
    monkeypatch.setattr(exports, "EXPORT_WAIT_S", 0.05)
    monkeypatch.setattr(smart, "SMART_WAIT_S", 0.05)
    monkeypatch.setattr(tiles, "PICTURE_WAIT_S", 0.05)
    held, per_user = {"exports": (exports._EXPORTERS, exports.EXPORTS_PER_HOLDER),
                      "smart": (smart._SMART_REQUESTS, smart.SMART_PER_USER),
                      "pictures": (tiles._PICTURES, tiles.PICTURES_PER_USER)}[turns]
    greedy, other = member_headers(Role.viewer), member_headers(Role.viewer)
    greedy_id = client.get("/api/v1/auth/me", headers=greedy).json()["id"]
    full_url = f"/api/v1/projects/{project['id']}" + url.format(slide=slide_row)
    for _ in range(per_user):  # the greedy viewer's earlier requests still build
        assert held.take_now(greedy_id)
    try:
        refused = client.get(full_url, headers=greedy)
        answered = client.get(full_url, headers=other)
    finally:
        for _ in range(per_user):
            held.give_back(greedy_id)
    assert refused.status_code == 503 and "your" in refused.json()["detail"]
    assert answered.status_code == ran, answered.text
    assert client.get(full_url, headers=greedy).status_code == ran
