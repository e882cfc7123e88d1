"""An M/M/1 queue: Poisson arrivals at ``arrival_rate``, one server with exponential service at
``service_rate``, first come first served, starting empty at epoch 0.

Its answers are known, which makes it the test bench of the statistics: with
``rho = arrival_rate / service_rate < 1`` the long-run mean number in system is
``L = rho / (1 - rho)`` and the mean time in system ``W = 1 / (service_rate - arrival_rate)``.

Streams (each logged only when the config declares it):

- ``in_system`` (plain): the number of customers in the system, recorded at every arrival and
  departure (a piecewise-constant signal, so its ``time_mean`` estimates L); an empty system is
  logged as an empty vector, which is how the logger says "zero";
- ``sojourn`` (plain): the time in system of every customer, at index 0, at its departure.

The simulation is vectorised: waiting times follow Lindley's recursion, which is a running
minimum of a random walk, so no Python loop runs per customer. Interarrival and service times come
from their own generators (``ctx.rng_for``), so under ``seeding: common`` replication r of every
sweep point sees the same unit-rate exponentials, scaled by the point's rates.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..sharding.context import RunContext

__all__ = ["run", "simulate", "STREAMS"]

STREAMS = ("in_system", "sojourn")


def _rate(params: dict[str, object], name: str, default: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value > 0):
        raise ConfigError(f"parameters.{name}: must be a positive number (got {value!r})")
    return float(value)


def _exponentials(rng: np.random.Generator, total: float, rate: float) -> np.ndarray:
    """Arrival epochs of a Poisson process of ``rate`` on [0, total), drawn in blocks so the
    numbers drawn do not depend on how many are needed (common random numbers stay in step)."""
    parts: list[np.ndarray] = []
    last = 0.0
    block = max(1024, int(total * rate * 1.1))
    while last < total:
        gaps = rng.standard_exponential(block) / rate
        epochs = last + np.cumsum(gaps)
        parts.append(epochs)
        last = float(epochs[-1])
    arrivals = np.concatenate(parts)
    return arrivals[arrivals < total]


def simulate(arrival_rate: float, service_rate: float, duration: float,
             arrivals_rng: np.random.Generator, service_rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival epochs, departure epochs, number in system after each event with its epoch).

    Returns ``arrive``, ``depart`` per customer and the event table ``(epochs, counts)`` stacked
    as a 2 x n array.
    """
    arrive = _exponentials(arrivals_rng, duration, arrival_rate)
    service = service_rng.standard_exponential(arrive.size) / service_rate
    # Lindley: W_k = max(0, W_{k-1} + S_{k-1} - A_k) is the walk's height above its running
    # minimum, with steps S_{k-1} - A_k (A_k: interarrival time).
    steps = np.empty(arrive.size)
    if arrive.size:
        steps[0] = 0.0
        steps[1:] = service[:-1] - np.diff(arrive)
    walk = np.cumsum(steps)
    wait = walk - np.minimum.accumulate(np.minimum(walk, 0.0))
    depart = arrive + wait + service
    epochs = np.concatenate([arrive, depart])
    change = np.concatenate([np.ones(arrive.size), -np.ones(depart.size)])
    # departures first on ties, so the count never shows a customer twice
    order = np.lexsort((change, epochs))
    events = np.vstack([epochs[order], np.cumsum(change[order])])
    return arrive, depart, events


def run(ctx: RunContext) -> dict[str, float]:
    """Simulate [0, duration); returns the replication's own estimate of L and the customers."""
    lam = _rate(ctx.params, "arrival_rate", 0.5)
    mu = _rate(ctx.params, "service_rate", 1.0)
    unknown = set(ctx.params) - {"arrival_rate", "service_rate"}
    if unknown:
        raise ConfigError(f"parameters.{sorted(unknown)[0]}: not a parameter of the M/M/1 model "
                          "(known: arrival_rate, service_rate)")
    arrive, depart, events = simulate(lam, mu, ctx.duration, ctx.rng_for("arrivals"),
                                      ctx.rng_for("service"))
    epochs, counts = events
    inside = epochs < ctx.duration
    epochs, counts = epochs[inside], counts[inside]
    if "in_system" in ctx.streams:
        stream = ctx.stream("in_system")
        assert isinstance(stream, int), "in_system must be a plain stream (no periodicity)"
        nonzero = counts > 0
        offsets = np.zeros(epochs.size + 1, dtype=np.int64)
        np.cumsum(nonzero, out=offsets[1:])
        ctx.logger.record_many(stream, epochs, offsets,
                               np.zeros(int(offsets[-1]), dtype=np.uint32), counts[nonzero])
    if "sojourn" in ctx.streams:
        stream = ctx.stream("sojourn")
        assert isinstance(stream, int), "sojourn must be a plain stream (no periodicity)"
        done = np.sort(depart[depart < ctx.duration])
        order = np.argsort(depart)
        sojourn = (depart - arrive)[order][: done.size]
        ctx.logger.record_many(stream, done,
                               np.arange(done.size + 1, dtype=np.int64),
                               np.zeros(done.size, dtype=np.uint32), sojourn)
    area = float(np.sum(counts[:-1] * np.diff(epochs))) if epochs.size > 1 else 0.0
    if epochs.size:
        area += float(counts[-1]) * (ctx.duration - float(epochs[-1]))
    return {"customers": float(arrive.size), "mean_in_system": area / ctx.duration}
