"""The error-rate window keeps a running count of failures instead of summing per request."""

from hypothesis import given, settings
from hypothesis import strategies as st

from flaregate.observability import alerts
from flaregate.observability.alerts import Alerts
from tests.support.fakes import FakeClock


class RecordingDispatcher:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def emit(self, kind: str, data: dict) -> None:
        self.events.append((kind, data))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 30), st.sampled_from([200, 429, 500, 502])), max_size=300))
def test_running_error_count_matches_the_window(steps):
    clock = FakeClock()
    watcher = Alerts(RecordingDispatcher(), clock)  # type: ignore[arg-type]
    for advance, status in steps:
        clock.advance(advance)
        watcher.request_finished(status)
        assert watcher._errors == sum(failed for _, failed in watcher._outcomes)


def test_count_survives_the_bounded_deque_dropping_its_oldest(monkeypatch):
    monkeypatch.setattr(alerts, "_MAX_SAMPLES", 50)
    clock = FakeClock()
    dispatcher = RecordingDispatcher()
    watcher = Alerts(dispatcher, clock)  # type: ignore[arg-type]
    for _ in range(50):
        watcher.request_finished(500)
    for _ in range(50):  # every failure is pushed out of the 50-slot deque by a success
        watcher.request_finished(200)
    assert watcher._errors == 0
    assert [kind for kind, _ in dispatcher.events] == ["error_rate.high"]
