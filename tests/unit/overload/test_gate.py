import pytest

from flaregate.errors import GatewayError
from flaregate.http import Headers
from flaregate.overload.gate import PRIORITY_HEADER, ShedGate, priority_of
from flaregate.overload.settings import SheddingSettings
from flaregate.overload.shedder import Priority
from flaregate.security.access import KeyPolicy, Principal


def test_only_operator_configured_keys_may_name_their_priority_in_a_header():
    header = Headers([(PRIORITY_HEADER, "high")])
    assert priority_of(Principal("key_a", "config"), header) is Priority.HIGH
    assert priority_of(Principal("key_b", "store"), header) is Priority.NORMAL  # ignored: not trusted
    stored_low = Principal("key_c", "store", policy=KeyPolicy(priority="low"))
    assert priority_of(stored_low, header) is Priority.LOW  # the stored key's own priority wins


def test_over_the_share_a_request_gets_503_overloaded_with_retry_after():
    gate = ShedGate(SheddingSettings(enabled=True, initial_limit=2, min_limit=2, max_limit=2))
    low = Principal("key_l", "store", policy=KeyPolicy(priority="low"))
    first = gate.admit(low, Headers([]), now=0.0)
    assert first is not None
    with pytest.raises(GatewayError) as refused:
        gate.admit(low, Headers([]), now=0.0)  # low may fill 1 of 2
    assert refused.value.status == 503 and refused.value.code == "overloaded"
    assert refused.value.headers["retry-after"] == "1"
    high = gate.admit(Principal("key_h", "store", policy=KeyPolicy(priority="high")), Headers([]), now=0.0)
    assert high is not None  # high may fill both places
    first.release(now=0.1)
    high.release(now=0.1)
    assert gate.admit(low, Headers([]), now=0.2) is not None
    assert gate.snapshot()["shed"] == {"low": 1, "normal": 0, "high": 0}


def test_off_by_default_no_permit_and_no_refusal():
    gate = ShedGate(SheddingSettings())
    assert gate.admit(Principal("key", "store"), Headers([]), now=0.0) is None
