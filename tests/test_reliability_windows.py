"""Exact replays, as a property of the window store (streamer/state.py).

Whatever the order of event times, the commits and a changelog round trip, the
window the store gives back for an uncommitted offset is exactly the window that
event saw when it was first pushed; past ``MAX_TAIL`` it says it does not know
(None: the intake then falls back to ``windows.before``) rather than guess.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer import state
from streamer.state import WindowStore, decode_state
from streamer.windows import push

KEEP, AGE = 4, 10_000

ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from(["a", "b"]), st.integers(-6_000, 9_000)),  # entity, time step (may go back)
        st.tuples(st.just("commit"), st.integers(0, 6)),  # commit this many of the oldest uncommitted offsets
        st.tuples(st.just("crash")),  # changelog round trip into a fresh store, as a restart does
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None, database=None)
@given(ops, st.sampled_from([3, 2048]))
def test_store_gives_back_exactly_what_each_uncommitted_event_saw(steps, max_tail):
    old_tail, state.MAX_TAIL = state.MAX_TAIL, max_tail
    try:
        store = WindowStore("transaction", KEEP, AGE, replays=True)
        truth: dict[str, list] = {"a": [], "b": []}  # the plain fold, as score-file computes it
        seen: dict[int, tuple[str, list]] = {}  # offset -> (entity, window before it)
        changelog: dict[str, bytes] = {}
        offset, committed, ts = 0, 0, {"a": 1_000_000, "b": 1_000_000}
        for step in steps:
            if step[0] == "push":
                _, e, dt = step
                ts[e] += dt
                rec = {"o": offset, "ts": ts[e]}
                seen[offset] = (e, truth[e])
                truth[e] = push(truth[e], rec, KEEP, AGE)
                store.push(0, e, rec)
                offset += 1
            elif step[0] == "commit":
                committed = min(offset, committed + step[1])
                store.advance(0, committed)
            else:
                changelog.update({k.decode(): v for _, k, v in store.take_dirty()})
                store = WindowStore("transaction", KEEP, AGE, replays=True)
                for e, value in changelog.items():
                    store.load(0, e, decode_state(value))
                # a restart resumes at the committed offset: what the changelog had is the truth from here
                truth = {e: store.get(0, e) for e in truth}
                seen = {o: v for o, v in seen.items() if o < committed or o in _pushed(changelog)}
            for e in truth:
                assert store.get(0, e) == truth[e]
            for o, (e, before) in seen.items():
                got = store.before(0, e, o)
                if o >= committed and max_tail > 100:
                    assert got == before, f"offset {o}: replay window differs"
                else:
                    assert got is None or got == before, f"offset {o}: a guessed window"
    finally:
        state.MAX_TAIL = old_tail


def _pushed(changelog: dict[str, bytes]) -> set[int]:
    out = set()
    for value in changelog.values():
        got = decode_state(value)
        base, tail = got if isinstance(got, tuple) else (got, [])
        out |= {r["o"] for r in base} | {r["o"] for r in tail}
    return out


def test_score_file_store_keeps_no_tail():
    store = WindowStore("transaction", KEEP, AGE)  # replays=False: score-file never commits
    for o in range(100):
        store.push(0, "a", {"o": o, "ts": o})
    assert store.before(0, "a", 99) is None and len(store.get(0, "a")) == KEEP
    assert [decode_state(v) for _, _, v in store.take_dirty()] == [store.get(0, "a")]
