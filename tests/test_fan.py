"""Experiment.fan and plot_fan: band data of a stream across replications, against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from disco_data_logger.errors import MetricError
from disco_data_logger.sharding import Experiment
from disco_data_logger.sharding.fan import BANDS, QUANTILES, plot_fan
from tests.experiments import Rep, StreamData, read_back, write_experiment


def state_records(rng: np.random.Generator) -> list[tuple[float, dict[int, float]]]:
    out = []
    for day in range(10):
        if rng.random() < 0.7:  # some days without an update: the state holds
            vec = {int(i): float(rng.integers(-3, 9)) for i in rng.choice(5, 3, replace=False)}
            out.append((day + 0.5, vec))
    return out


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Experiment, dict, list[Rep]]:
    root = tmp_path_factory.mktemp("fan")
    rng = np.random.default_rng(8)
    reps = [Rep(f"p{p:04d}-r{r:06d}", f"p{p:04d}", p, r,
                {"state": StreamData(state_records(rng), periodicity=1.0, close_at=10.0),
                 "events": StreamData([(float(rng.uniform(0, 10)), {0: float(r + 1)}),
                                       (float(rng.uniform(0, 10)), {1: 2.0})])})
            for p in range(2) for r in range(9)]
    where = write_experiment(root, reps, shards=2)
    return Experiment.open(root), read_back(root, where), reps


def step_value(records: list[tuple[float, dict[int, float]]], at: float) -> float:
    """Entity sum of the last record at or before ``at`` (0 before the first)."""
    value = 0.0
    for epoch, vec in sorted(records, key=lambda r: r[0]):
        if epoch <= at + 1e-9:
            value = sum(vec.values())
    return value


def test_periodic_stream_bands(experiment: tuple[Experiment, dict, list[Rep]]) -> None:
    exp, back, reps = experiment
    fan = exp.fan("state")
    assert fan.column_names == ["point_id", "epoch", "n", "mean", *BANDS]
    for pid in ("p0000", "p0001"):
        rows = [r for r in fan.to_pylist() if r["point_id"] == pid]
        epochs = [r["epoch"] for r in rows]
        assert epochs == pytest.approx([float(k) for k in range(1, 11)])  # the boundaries
        tasks = [rep.task_id for rep in reps if rep.point_id == pid]
        for row in rows:
            values = [step_value(back[(t, "state")], row["epoch"]) for t in tasks]
            assert row["n"] == 9
            assert row["mean"] == pytest.approx(np.mean(values))
            for band, q in zip(BANDS, QUANTILES, strict=True):
                assert row[band] == pytest.approx(np.quantile(values, q)), (pid, row["epoch"])


def test_plain_stream_on_an_even_grid(experiment: tuple[Experiment, dict, list[Rep]]) -> None:
    exp, back, reps = experiment
    fan = exp.fan("events", points=["p0001"], max_epochs=21, entities="index:0")
    assert set(fan["point_id"].to_pylist()) == {"p0001"}
    epochs = fan["epoch"].to_numpy()
    # no config: the grid spans [0, last epoch of the stream]
    last = max(e for rep in reps for e, _ in back[(rep.task_id, "events")])
    np.testing.assert_allclose(epochs, np.linspace(0, last, 21))
    tasks = [rep.task_id for rep in reps if rep.point_id == "p0001"]
    for row in fan.to_pylist():
        values = []
        for t in tasks:
            value = 0.0
            for epoch, vec in sorted(back[(t, "events")], key=lambda r: r[0]):
                if epoch <= row["epoch"]:
                    value = vec.get(0, 0.0)
            values.append(value)
        assert row["median"] == pytest.approx(np.median(values))


def test_subsampled_boundaries(experiment: tuple[Experiment, dict, list[Rep]]) -> None:
    exp, _, _ = experiment
    fan = exp.fan("state", max_epochs=4)
    epochs = sorted(set(fan["epoch"].to_pylist()))
    assert len(epochs) == 4 and epochs[0] == pytest.approx(1.0) and epochs[-1] == pytest.approx(10)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"stream": "nope"}, "unknown stream 'nope' \\(streams: events, state\\)"),
    ({"stream": "state", "entities": "median"}, "entities must be"),
    ({"stream": "state", "max_epochs": 1}, "max_epochs must be an integer >= 2"),
])
def test_errors(experiment: tuple[Experiment, dict, list[Rep]], kwargs: dict,
                message: str) -> None:
    with pytest.raises(MetricError, match=message):
        experiment[0].fan(**kwargs)


def test_plot_fan(experiment: tuple[Experiment, dict, list[Rep]], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plot_fan needs the report extra")
    from matplotlib.figure import Figure

    fan = experiment[0].fan("state")
    fig = Figure()
    ax = plot_fan(fan, ax=fig.subplots(), title="state")
    assert ax.get_title() == "state"
    assert len(ax.lines) == 2 and len(ax.collections) == 4  # a median and two bands per point
    fig.savefig(tmp_path / "fan.png")
    assert (tmp_path / "fan.png").stat().st_size > 1000
    only = plot_fan(fan, point="p0001", ax=Figure().subplots())
    assert len(only.lines) == 1
    with pytest.raises(MetricError, match="no point 'p9'"):
        plot_fan(fan, point="p9", ax=Figure().subplots())
