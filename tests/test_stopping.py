"""PrecisionRule: the decision of a stop: section, as a pure function of committed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from disco_data_logger.sharding.config import StopSpec
from disco_data_logger.sharding.statistics import mean_interval
from disco_data_logger.sharding.stopping import PrecisionRule


def rule(**kw: object) -> PrecisionRule:
    spec = StopSpec.model_validate({"metric": "L", "half_width": 0.1, **kw})
    return PrecisionRule(spec, max_replications=kw.get("max_replications", 100))  # type: ignore[arg-type]


def values(n: int, sd: float = 1.0, mean: float = 5.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, n)


def test_checkpoints() -> None:
    r = rule(min_replications=10, batch=20, max_replications=55)
    assert r.checkpoints_upto(9) == []
    assert r.checkpoints_upto(10) == [10]
    assert r.checkpoints_upto(49) == [10, 30]
    assert r.checkpoints_upto(55) == [10, 30, 50, 55]
    assert r.checkpoints_upto(80) == [10, 30, 50, 55]
    assert [r.next_checkpoint(n) for n in (0, 9, 10, 29, 30, 50, 54)] == [10, 10, 30, 30, 50,
                                                                          55, 55]


def test_below_min_asks_for_the_rest_of_min() -> None:
    status = rule(min_replications=10).assess_point("p0000", {"L": values(4)})
    assert (status.state, status.more, status.stopped_at) == ("running", 6, None)
    nothing = rule(min_replications=10).assess({}, points=["p0000", "p0001"])
    assert nothing.more == {"p0000": 10, "p0001": 10}


def test_stops_at_the_first_checkpoint_that_meets_the_target() -> None:
    # sd 1: the half-width is about 2 / sqrt(n); 0.5 is reached between 16 and 20
    r = rule(half_width=0.5, min_replications=5, batch=5, look_ahead=0)
    x = values(60, seed=1)
    status = r.assess_point("p0000", {"L": x})
    c = status.stopped_at
    assert status.state == "met" and status.more == 0 and c is not None
    assert mean_interval(x[:c]).half_width <= 0.5
    assert all(mean_interval(x[:k]).half_width > 0.5 for k in range(5, c, 5))
    assert status.half_width["L"] == pytest.approx(mean_interval(x[:c]).half_width)
    # the decision at a checkpoint ignores everything committed after it
    assert r.assess_point("p0000", {"L": x[:c]}).stopped_at == c


def test_look_ahead_needs_the_target_to_hold_for_earlier_prefixes() -> None:
    x = values(100, seed=2)
    plain = rule(half_width=0.6, min_replications=5, batch=1, look_ahead=0)
    careful = rule(half_width=0.6, min_replications=5, batch=1, look_ahead=5)
    first = plain.assess_point("p", {"L": x}).stopped_at
    later = careful.assess_point("p", {"L": x}).stopped_at
    assert first is not None and later is not None and later >= first
    hws = [mean_interval(x[:k]).half_width for k in range(2, 101)]
    ok = [hw <= 0.6 for hw in hws]  # ok[k - 2]: the target holds with k replications
    assert all(ok[later - 5 - 2: later - 1])
    assert careful.look_ahead(100) == 5 and careful.look_ahead(400) == 20


def test_relative_target() -> None:
    r = rule(half_width=0.05, relative=True, min_replications=10, batch=10, look_ahead=0)
    status = r.assess_point("p", {"L": values(200, sd=1.0, mean=10.0, seed=3)})
    c = status.stopped_at
    assert status.state == "met" and c is not None
    assert status.target["L"] == pytest.approx(0.05 * abs(status.mean["L"]))
    assert status.half_width["L"] <= status.target["L"]


def test_every_listed_metric_must_meet_it() -> None:
    r = rule(metric=["L", "W"], half_width=0.3, min_replications=10, batch=10, look_ahead=0,
             max_replications=200)
    narrow, wide = values(200, sd=0.5, seed=4), values(200, sd=2.0, seed=5)
    both = r.assess_point("p", {"L": narrow, "W": wide}).stopped_at
    alone = rule(half_width=0.3, min_replications=10, batch=10, look_ahead=0,
                 max_replications=200).assess_point("p", {"L": narrow}).stopped_at
    assert both is not None and alone is not None and both > alone


def test_max_replications_stops_with_a_warning() -> None:
    r = rule(half_width=0.01, min_replications=5, batch=5, max_replications=30)
    decision = r.assess({"p0000": {"L": values(30)}, "p0001": {"L": values(12)}})
    first, second = decision.points
    assert (first.state, first.more, first.stopped_at) == ("max", 0, 30)
    assert (second.state, second.more) == ("running", 3)
    assert not decision.done and decision.more == {"p0001": 3}
    (warning,) = decision.warnings
    assert warning.startswith("p0000: stopped at max_replications=30 without reaching")
    assert "target ±0.01" in warning
    assert "p0001 n=12 L ±" in decision.progress_text()


def test_missing_values_never_meet_a_target() -> None:
    x = np.full(40, 3.0)  # a zero half-width would meet any target ...
    x[7] = np.nan  # ... but replication 7 has no value, so no prefix beyond it is trusted
    status = rule(half_width=0.5, min_replications=5, batch=5, look_ahead=0).assess_point(
        "p", {"L": x})
    assert status.stopped_at == 5  # the prefix before the gap
    x[:5] = [1.0, 2.0, 3.0, 4.0, 5.0]
    status = rule(half_width=0.5, min_replications=5, batch=5, look_ahead=0,
                  max_replications=40).assess_point("p", {"L": x})
    assert status.state == "max"


def test_bad_input() -> None:
    with pytest.raises(KeyError, match="no values for metric"):
        rule().assess_point("p", {"W": [1.0]})
    with pytest.raises(ValueError, match="different numbers"):
        rule(metric=["L", "W"]).assess_point("p", {"L": [1.0], "W": [1.0, 2.0]})
    with pytest.raises(ValueError, match="exceeds"):
        rule(min_replications=50, max_replications=20)


@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 200), batch=st.integers(1, 25),
       look_ahead=st.integers(0, 6))
def test_resuming_after_any_kill_decides_as_an_uninterrupted_run(seed: int, cut: int, batch: int,
                                                                 look_ahead: int) -> None:
    """A coordinator that follows ``more`` reaches the same stop whatever it committed when it
    was killed: the decision only ever looks at checkpoints."""
    r = rule(half_width=0.4, min_replications=5, batch=batch, look_ahead=look_ahead,
             max_replications=200)
    x = values(200, seed=seed % 1000)

    def drive(start: int) -> int:
        n = start
        while True:
            status = r.assess_point("p", {"L": x[:n]})
            if status.done:
                assert status.stopped_at is not None
                return status.stopped_at
            n += status.more

    uninterrupted = drive(0)
    resumed = drive(min(cut, uninterrupted))  # killed with `cut` replications committed
    assert resumed == uninterrupted
    assert not math.isnan(uninterrupted)
