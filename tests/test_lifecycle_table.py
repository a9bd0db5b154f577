"""The lifecycle state table, exhaustively, and from many threads at once."""

from __future__ import annotations

import itertools
import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puregrpc._lifecycle import TABLE, Input, Lifecycle, State, StopDecision


def _lifecycle_in(state: State) -> Lifecycle:
    life = Lifecycle()
    path = {
        State.NEW: [],
        State.SERVING: [Input.START],
        State.DRAINING: [Input.START, Input.STOP],
        State.TERMINATED: [Input.START, Input.STOP, Input.DRAINED],
    }[state]
    for step in path:
        if step is Input.STOP:
            life.stop(1.0, 0.0)
        else:
            life.apply(step)
    assert life.state is state
    return life


def test_table_is_total() -> None:
    assert set(TABLE) == set(itertools.product(State, Input))


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Input)))
def test_every_state_and_input(state: State, event: Input) -> None:
    life = _lifecycle_in(state)
    after, misuse = TABLE[(state, event)]
    if misuse is not None:
        with pytest.raises(misuse[0], match=misuse[1]):
            life.apply(event)
        assert life.state is state
    else:
        assert life.apply(event) == (state, after)
        assert life.state is after
    assert life.terminated == (life.state is State.TERMINATED)


def test_misuse_errors_match_grpcio() -> None:
    assert TABLE[(State.SERVING, Input.START)][1][0] is ValueError
    assert TABLE[(State.TERMINATED, Input.START)][1][0] is ValueError
    assert TABLE[(State.SERVING, Input.ADD_PORT)][1][0] is RuntimeError


def test_stop_before_start_is_a_set_event_and_no_change() -> None:
    life = Lifecycle()
    event, decision = life.stop(0, 0.0)
    assert event.is_set() and decision is StopDecision.NOTHING
    assert life.state is State.NEW and not life.terminated


def test_earliest_deadline_wins() -> None:
    life = _lifecycle_in(State.SERVING)
    _, first = life.stop(10, 100.0)
    assert first is StopDecision.BEGIN and life.deadline == 110.0
    _, later = life.stop(20, 100.5)
    assert later is StopDecision.NOTHING and life.deadline == 110.0
    _, earlier = life.stop(1, 100.5)
    assert earlier is StopDecision.EARLIER and life.deadline == 101.5
    _, none = life.stop(None, 100.6)
    assert none is StopDecision.EARLIER and life.deadline == -math.inf


def test_negative_grace_acts_as_zero() -> None:
    life = _lifecycle_in(State.SERVING)
    life.stop(-5, 7.0)
    assert life.deadline == 7.0


def test_every_stop_event_is_set_at_termination() -> None:
    life = _lifecycle_in(State.SERVING)
    events = [life.stop(g, 0.0)[0] for g in (5, 1, None, 3)]
    assert not any(e.is_set() for e in events)
    life.apply(Input.DRAINED)
    assert all(e.is_set() for e in events)
    assert life.stop(1, 0.0)[0].is_set()  # after termination: already set


def test_wait_returns_true_on_timeout_false_when_terminated() -> None:
    life = _lifecycle_in(State.SERVING)
    assert life.wait(0) is True
    assert life.wait(-1) is True
    assert life.wait(0.01) is True
    life.stop(0, 0.0)
    life.apply(Input.DRAINED)
    assert life.wait(None) is False
    assert life.wait(0) is False


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([Input.ADD_PORT, Input.START, Input.STOP, Input.DRAINED]), min_size=1, max_size=24))
def test_concurrent_inputs_keep_the_table(inputs: list) -> None:
    """Many threads apply inputs at once: every transition taken is in the table,
    the state only moves forward, and termination sets every stop event."""
    life = Lifecycle()
    order = list(State)
    seen: list = []
    events: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(inputs))

    def worker(event: Input) -> None:
        barrier.wait()
        try:
            if event is Input.STOP:
                stop_event, _ = life.stop(1.0, 0.0)
                with lock:
                    events.append(stop_event)
            else:
                before, after = life.apply(event)
                with lock:
                    seen.append((before, event, after))
        except (ValueError, RuntimeError):
            pass

    threads = [threading.Thread(target=worker, args=(event,)) for event in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for before, event, after in seen:
        assert TABLE[(before, event)][0] is after
        assert order.index(after) >= order.index(before)
    if life.state is State.TERMINATED:
        assert all(event.is_set() for event in events)
