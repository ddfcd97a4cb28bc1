"""The big node's session manager against a fake clock: limits, draining, stop, expiry, queueing."""

from __future__ import annotations

import pytest

from gpupool import crypto
from gpupool.core.poc import DEFAULT_R_TARGET
from gpupool.core.ports import FakeClock
from gpupool.delegation.sessions import SessionManager
from gpupool.errors import NotFound, RateLimited, TokenInvalid
from tests.pow_helpers import ScriptedFactory, tiny_round

TOKEN = "my-secure-token-123"
SMALL = crypto.KeyPair.generate()


def manager(clock: FakeClock, factory: ScriptedFactory, **kw: object) -> SessionManager:
    return SessionManager(TOKEN, factory, clock.now, **kw)  # type: ignore[arg-type]


def test_token_is_checked_and_a_missing_one_is_as_wrong_as_a_bad_one(clock: FakeClock) -> None:
    m = manager(clock, ScriptedFactory())
    m.check_token(TOKEN)
    for bad in ("", None, TOKEN + " ", TOKEN.upper(), "x"):
        with pytest.raises(TokenInvalid) as err:
            m.check_token(bad)
        assert err.value.message == "Invalid auth token"


def test_a_poll_drains_and_the_next_one_is_empty_until_new_batches(clock: FakeClock) -> None:
    factory = ScriptedFactory(gpu_count=8)
    m = manager(clock, factory)
    session = m.start(tiny_round(SMALL.pubkey))
    assert session.status == "generating" and session.gpu_count == 8
    gen = factory.made[0]
    assert gen.started and gen.pow_round.public_key == SMALL.pubkey

    made = gen.produce(2)
    _, first = m.poll(session.session_id)
    assert first == made and all(d < DEFAULT_R_TARGET for b in first for d in b.dist)
    _, second = m.poll(session.session_id)
    assert second == []
    more = gen.produce(1)
    got_session, third = m.poll(session.session_id)
    assert third == more and got_session.total_generated == 3
    assert not set(third[0].nonces) & {n for b in first for n in b.nonces}


def test_over_the_session_limit_is_refused_until_a_session_ends(clock: FakeClock) -> None:
    m = manager(clock, ScriptedFactory(), max_sessions=2)
    a = m.start(tiny_round(SMALL.pubkey))
    m.start(tiny_round(SMALL.pubkey, node_id=1, node_count=2))
    with pytest.raises(RateLimited) as err:
        m.start(tiny_round(SMALL.pubkey))
    assert err.value.retry_after_s > 0
    m.stop(a.session_id)
    m.start(tiny_round(SMALL.pubkey))  # a stopped session frees its place
    assert m.status()["total_sessions"] == 3 and m.status()["active_sessions"] == 2


def test_sessions_expire_after_330_s_their_generator_stopped_and_last_batches_kept(clock: FakeClock) -> None:
    factory = ScriptedFactory()
    m = manager(clock, factory, max_sessions=1, retain_s=60)
    session = m.start(tiny_round(SMALL.pubkey))
    gen = factory.made[0]
    clock.advance(329.9)
    m.sweep_and_stop()
    assert session.status == "generating" and not gen.stopped
    made = gen.produce(1)
    clock.advance(0.1)
    m.sweep_and_stop()
    assert gen.stopped and session.status == "expired" and not session.active
    assert m.status()["sessions"][session.session_id]["status"] == "expired"
    # The batches made before expiry still reach the small node on its next poll.
    polled, batches = m.poll(session.session_id)
    assert batches == made and polled.status == "expired"
    # An expired session does not hold a place.
    m.start(tiny_round(SMALL.pubkey))
    clock.advance(60)
    m.sweep_and_stop()
    with pytest.raises(NotFound, match="Session not found"):
        m.poll(session.session_id)


def test_stop_ends_the_generator_and_reports_totals(clock: FakeClock) -> None:
    factory = ScriptedFactory()
    m = manager(clock, factory)
    session = m.start(tiny_round(SMALL.pubkey))
    factory.made[0].produce(2)
    stopped = m.stop(session.session_id)
    assert stopped.status == "stopped" and factory.made[0].stopped and stopped.total_generated == 2
    assert len(m.poll(session.session_id)[1]) == 2  # still handed out once
    m.stop(session.session_id)  # stopping twice is harmless
    with pytest.raises(NotFound):
        m.stop("no-such-session")


def test_status_lists_every_session_with_age(clock: FakeClock) -> None:
    factory = ScriptedFactory(gpu_count=4)
    m = manager(clock, factory, max_sessions=5)
    a = m.start(tiny_round(SMALL.pubkey, node_id=3, node_count=4))
    clock.advance(120.5)
    factory.made[0].produce(1)
    status = m.status()
    assert status["total_sessions"] == 1 and status["active_sessions"] == 1 and status["max_sessions"] == 5
    entry = status["sessions"][a.session_id]
    assert entry["status"] == "generating" and entry["node_id"] == 3 and entry["gpu_count"] == 4
    assert entry["total_generated"] == 1 and entry["age_seconds"] == 120.5
    assert entry["created_at"] == a.created_at


def test_with_one_generating_slot_later_sessions_wait_their_turn(clock: FakeClock) -> None:
    factory = ScriptedFactory()
    m = manager(clock, factory, max_sessions=3, max_active=1)
    a = m.start(tiny_round(SMALL.pubkey))
    clock.advance(1)
    b = m.start(tiny_round(SMALL.pubkey, block_height=8))
    clock.advance(1)
    c = m.start(tiny_round(SMALL.pubkey, block_height=9))
    assert [s.status for s in (a, b, c)] == ["generating", "initializing", "initializing"]
    assert len(factory.made) == 1 and m.poll(b.session_id)[1] == []
    m.stop(a.session_id)
    assert b.status == "generating" and c.status == "initializing"  # first come, first served
    clock.advance(330)
    m.sweep_and_stop()  # b and c both expire; nothing is left waiting
    assert (b.status, c.status) == ("expired", "expired") and len(factory.made) == 2


def test_a_generator_that_cannot_start_is_an_error_and_frees_its_place(clock: FakeClock) -> None:
    m = manager(clock, ScriptedFactory(fail=True), max_sessions=1)
    session = m.start(tiny_round(SMALL.pubkey))
    assert session.status == "error" and "out of memory" in (session.error or "")
    m.sweep_and_stop()
    m.start(tiny_round(SMALL.pubkey))  # not 429: the failed session is not active


def test_close_stops_every_generator(clock: FakeClock) -> None:
    factory = ScriptedFactory()
    m = manager(clock, factory)
    for h in range(3):
        m.start(tiny_round(SMALL.pubkey, block_height=h))
    m.close()
    assert all(g.stopped for g in factory.made) and m.status()["active_sessions"] == 0
