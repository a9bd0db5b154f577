"""budgets.py, stream.py and validation.py on their own."""

from __future__ import annotations

from h2_helpers import REQUEST_FIELDS, data_frame, headers_frame, raw_server

from puregrpc._h2 import budgets, validation
from puregrpc._h2.hpack_encoder import encode_headers


def test_budget_burst_then_rate() -> None:
    budget = budgets.Budget(rate=10.0, burst=5)
    assert all(budget.take(0.0) for _ in range(5))
    assert not budget.take(0.0)
    assert not budget.take(0.05)  # half a token back: still in debt
    assert budget.take(0.3)
    # A long pause refills to the burst, never beyond it.
    budget.take(1000.0)
    assert budget.tokens == 4.0


def test_window_update_credit() -> None:
    credit = budgets.WindowUpdateCredit()
    assert not credit.take(0)  # nothing earned yet
    assert credit.take(1)  # one warrant: WINDOW_UPDATE_CREDIT frames
    for _ in range(budgets.WINDOW_UPDATE_CREDIT - 1):
        assert credit.take(1)
    assert not credit.take(1)
    assert credit.take(10**9)  # a huge count earns no more than the cap
    assert credit.credit == budgets.WINDOW_UPDATE_CREDIT_MAX - 1


def test_ping_policy() -> None:
    policy = budgets.PingPolicy(min_interval=10.0, max_strikes=2, permit_without_calls=False)
    assert not policy.too_many(0.0, False, True)  # the first PING is never a strike
    assert not policy.too_many(1.0, False, True)  # strike 1
    assert not policy.too_many(2.0, False, True)  # strike 2
    assert not policy.too_many(2.5, True, True)  # we sent data since: strikes forgiven
    assert not policy.too_many(30.0, False, True)  # past the interval
    assert not policy.too_many(31.0, False, True)
    assert not policy.too_many(32.0, False, True)
    assert policy.too_many(33.0, False, True)  # third strike
    idle = budgets.PingPolicy(min_interval=10.0, max_strikes=0, permit_without_calls=False)
    idle.too_many(0.0, False, False)
    assert idle.too_many(600.0, False, False)  # no call open: two hours apply


def test_stream_states_follow_the_exchange() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1) + headers_frame(3) + headers_frame(5, end_stream=True))
    assert server._streams[1].state == "open"
    assert server._streams[5].state == "half-closed (remote)"
    server.send_headers(3, encode_headers([(b":status", b"200")]), end_stream=True)
    assert server._streams[3].state == "half-closed (local)"
    server.receive_data(data_frame(3, b"", end_stream=True))
    assert 3 not in server._streams  # closed: forgotten by the table, remembered apart
    assert server._recent[3] == 3  # stream.ENDED


def test_check_request_and_trailers() -> None:
    result = validation.check_request([*REQUEST_FIELDS, (b"content-length", b"12"), (b"x-v", b" padded ")])
    assert result is not None
    headers, size, content_length = result
    assert headers[-1] == ("x-v", "padded") and content_length == 12
    assert size == sum(
        len(n) + len(v) + 32 for n, v in [*REQUEST_FIELDS, (b"content-length", b"12"), (b"x-v", b" padded ")]
    )
    assert validation.check_request([(b"x-a", b"1"), *REQUEST_FIELDS]) is None  # pseudo after regular
    assert validation.check_request([*REQUEST_FIELDS, (b"Upper", b"1")]) is None
    assert validation.check_request([*REQUEST_FIELDS, (b"connection", b"close")]) is None
    assert validation.check_request([*REQUEST_FIELDS, (b"te", b"gzip")]) is None
    assert validation.check_request([*REQUEST_FIELDS, (b"x", b"a\r\nb")]) is None
    assert validation.check_request(REQUEST_FIELDS[1:]) is None  # no :method
    assert validation.check_trailers([(b"grpc-status", b"0")]) == [("grpc-status", "0")]
    assert validation.check_trailers([(b":status", b"200")]) is None
    assert validation.over_list_size([("a", "b")], 33) is True
    assert validation.over_list_size([("a", "b")], 34) is False
