"""A two-echelon (s, S) inventory system: one warehouse supplying several stores, many SKUs.

Every day, in this order:

1. shipments whose lead time has elapsed arrive (warehouse and stores);
2. customers at each store demand a Poisson number of units of each SKU (per-SKU popularity, a
   per-store size and a weekly pattern); what the store cannot serve is lost, or backordered when
   ``backorders`` is true;
3. each store reviews every SKU: when its inventory position (stock + in transit) is at or below
   ``s`` days of its mean demand, it orders up to ``S`` days;
4. the warehouse ships what it can, serving the stores in a random order each day; the part of an
   order it cannot ship is dropped (the store orders again while it stays below its reorder point);
5. the warehouse reviews its own position against ``warehouse_s``/``warehouse_S`` days of the
   stores' total mean demand and orders from an unlimited supplier.

Lead times are ``1 + Poisson(mean - 1)`` days, capped at three times the mean; one is drawn for
every SKU-location every day and used where an order ships, so every policy draws as many.

Entities are SKU-locations, ``entity = sku * (n_stores + 1) + location`` with location 0 the
warehouse and 1..n_stores the stores. Streams (each logged only when the config declares it):

- ``stock`` (state): units on hand per entity at the end of each day (negative = backlog);
- ``demand`` (accumulator): units demanded per store entity;
- ``shortage`` (accumulator): demand a store could not serve from stock, and at the warehouse
  the store order quantity it could not ship;
- ``lost`` (accumulator): demand a store could not serve from stock (store entities only: the
  lost sales, or the new backorders with ``backorders: true``);
- ``orders`` (plain events): units ordered per entity (stores from the warehouse, the warehouse
  from the supplier).

All events of day ``d`` are logged at epoch ``d + 0.5``, clear of the period boundaries.

The product catalogue (SKU popularity, store sizes) is drawn from ``catalogue_seed``, not from
the replication's generator: every replication and every sweep point simulates the same shops,
and only the demand and lead times vary. Demand, lead times and the warehouse's rationing order
each come from their own generator (``ctx.rng_for``), so under ``seeding: common`` replication r
of every policy faces the same customer demand, however differently the policies order.

Each day is a handful of numpy operations over all SKU-locations at once, so run time grows with
days, not with SKUs times days in Python.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..sharding.context import RunContext

__all__ = ["InventoryParams", "run", "STREAMS"]

STREAMS = ("stock", "demand", "shortage", "lost", "orders")
"""The streams this model writes, when the config declares them."""


@dataclass(frozen=True)
class InventoryParams:
    """The model's parameters and their defaults (``parameters:`` and sweep keys in a config)."""

    n_skus: int = 100
    n_stores: int = 4
    mean_demand: float = 1.0
    """Mean daily demand of one SKU at one store, averaged over SKUs and stores."""
    demand_dispersion: float = 1.0
    """Spread of SKU popularity (sigma of a log-normal); 0 makes every SKU alike."""
    weekly_amplitude: float = 0.2
    """Relative amplitude of the weekly demand pattern."""
    s: float = 4.0
    """Store reorder point, in days of the SKU-store's mean demand."""
    S: float = 10.0
    """Store order-up-to level, in days of mean demand."""
    warehouse_s: float = 10.0
    """Warehouse reorder point, in days of the stores' total mean demand for the SKU."""
    warehouse_S: float = 24.0
    store_lead_time: float = 2.0
    """Mean days from warehouse to store (at least 1)."""
    supplier_lead_time: float = 7.0
    """Mean days from supplier to warehouse (at least 1)."""
    backorders: bool = False
    """Backorder unmet store demand instead of losing it."""
    catalogue_seed: int = 0

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> InventoryParams:
        """Parameters from ``ctx.params``; unknown names are errors, so typos cannot hide."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, value in params.items():
            if name not in fields:
                raise ConfigError(
                    f"parameters.{name}: not a parameter of the inventory model"
                    f" (known: {', '.join(fields)})"
                )
            default = fields[name].default
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = (
                    isinstance(value, int | float)
                    and not isinstance(value, bool)
                    and float(value).is_integer()
                )
                value = int(value) if ok else value
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                value = float(value) if ok else value
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(
                    f"parameters.{name}: must be a {type(default).__name__} (got {value!r})"
                )
            values[name] = value
        p = cls(**values)
        p._check()
        return p

    def _check(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ConfigError(f"parameters.{name}: {message} (got {getattr(self, name)!r})")

        for name in ("n_skus", "n_stores"):
            if getattr(self, name) < 1:
                fail(name, "must be >= 1")
        for name in ("mean_demand", "demand_dispersion", "weekly_amplitude", "s", "catalogue_seed"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        if self.weekly_amplitude >= 1:
            fail("weekly_amplitude", "must be < 1 (demand rates stay positive)")
        if self.S <= self.s:
            fail("S", f"must be > s ({self.s})")
        if self.warehouse_s < 0:
            fail("warehouse_s", "must be >= 0")
        if self.warehouse_S <= self.warehouse_s:
            fail("warehouse_S", f"must be > warehouse_s ({self.warehouse_s})")
        for name in ("store_lead_time", "supplier_lead_time"):
            if getattr(self, name) < 1:
                fail(name, "must be >= 1 day")


def _levels(days_low: float, days_high: float, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s, S) in units from days of cover; S > s always, so a reorder is never of zero units."""
    low = np.ceil(days_low * rate).astype(np.int64)
    high = np.maximum(np.ceil(days_high * rate).astype(np.int64), low + 1)
    return low, high


def _lead_cap(mean: float) -> int:
    return max(1, math.ceil(3 * mean))


def run(ctx: RunContext) -> dict[str, float]:
    """Simulate ``floor(ctx.duration)`` days; returns a few KPIs of the replication."""
    p = InventoryParams.from_mapping(ctx.params)
    demand_rng = ctx.rng_for("demand")
    lead_rng = ctx.rng_for("lead_times")
    rationing_rng = ctx.rng_for("rationing")
    n_skus, n_stores = p.n_skus, p.n_stores
    n_loc = n_stores + 1
    n_days = int(math.floor(ctx.duration + 1e-9))
    logged = {name: name in ctx.streams for name in STREAMS}

    catalogue = np.random.default_rng(p.catalogue_seed)
    popularity = catalogue.lognormal(0.0, p.demand_dispersion, n_skus)
    popularity /= popularity.mean()
    store_size = catalogue.lognormal(0.0, 0.3, n_stores)
    store_size /= store_size.mean()
    rate = p.mean_demand * popularity[:, None] * store_size[None, :]  # (sku, store) units/day
    weekday = 1.0 + p.weekly_amplitude * np.sin(2 * np.pi * np.arange(7) / 7)

    store_s, store_S = _levels(p.s, p.S, rate)
    wh_s, wh_S = _levels(p.warehouse_s, p.warehouse_S, rate.sum(axis=1))

    # Stock and in-transit quantities per (sku, location); location 0 is the warehouse.
    stock = np.empty((n_skus, n_loc), dtype=np.int64)
    stock[:, 0] = wh_S
    stock[:, 1:] = store_S
    on_order = np.zeros_like(stock)
    store_cap, supplier_cap = _lead_cap(p.store_lead_time), _lead_cap(p.supplier_lead_time)
    horizon = max(store_cap, supplier_cap) + 1
    pipeline = np.zeros((horizon, n_skus, n_loc), dtype=np.int64)  # arrivals by day mod horizon

    shortage = np.zeros_like(stock)
    orders = np.zeros_like(stock)
    totals = {"demand": 0, "lost_or_backordered": 0, "store_orders": 0, "supplier_orders": 0}
    stock_days = np.zeros(n_loc, dtype=np.float64)

    def lead_times(mean: float, cap: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.minimum(1 + lead_rng.poisson(mean - 1.0, shape), cap)

    def log(name: str, epoch: float, dense: np.ndarray) -> None:
        flat = dense.ravel()
        idx = np.flatnonzero(flat)
        if idx.size or name == "stock":
            ctx.record(name, epoch, idx, flat[idx].astype(np.float64))

    for day in range(n_days):
        epoch = day + 0.5
        slot = day % horizon
        arriving = pipeline[slot]
        stock += arriving
        on_order -= arriving
        arriving[...] = 0

        demand = demand_rng.poisson(rate * weekday[day % 7])
        store_stock = stock[:, 1:]
        if p.backorders:
            short = np.maximum(demand - np.maximum(store_stock, 0), 0)
            store_stock -= demand
        else:
            short = demand - np.minimum(demand, store_stock)
            store_stock -= demand - short

        position = store_stock + on_order[:, 1:]
        wanted = np.where(position <= store_s, store_S - position, 0)

        # Ration the warehouse stock per SKU over the stores in a random order.
        order = rationing_rng.permutation(n_stores)
        wanted_in_order = wanted[:, order]
        before = np.cumsum(wanted_in_order, axis=1) - wanted_in_order
        shipped = np.empty_like(wanted)
        shipped[:, order] = np.clip(stock[:, :1] - before, 0, wanted_in_order)
        stock[:, 0] -= shipped.sum(axis=1)
        on_order[:, 1:] += shipped
        sku, store = np.nonzero(shipped)
        # A lead time for every (sku, store) every day, used where something ships: the same
        # number of draws whatever the policy, so common random numbers stay in step.
        store_leads = lead_times(p.store_lead_time, store_cap, (n_skus, n_stores))
        arrive = (day + store_leads[sku, store]) % horizon
        np.add.at(pipeline, (arrive, sku, store + 1), shipped[sku, store])

        wh_position = stock[:, 0] + on_order[:, 0]
        wh_wanted = np.where(wh_position <= wh_s, wh_S - wh_position, 0)
        (wh_sku,) = np.nonzero(wh_wanted)
        supplier_leads = lead_times(p.supplier_lead_time, supplier_cap, (n_skus,))
        arrive = (day + supplier_leads[wh_sku]) % horizon
        np.add.at(pipeline[:, :, 0], (arrive, wh_sku), wh_wanted[wh_sku])
        on_order[:, 0] += wh_wanted

        totals["demand"] += int(demand.sum())
        totals["lost_or_backordered"] += int(short.sum())
        totals["store_orders"] += int(np.count_nonzero(wanted))
        totals["supplier_orders"] += int(wh_sku.size)
        stock_days += np.maximum(stock, 0).sum(axis=0)

        if logged["stock"]:
            log("stock", epoch, stock)
        if logged["demand"]:
            # demand lives on store entities only: pad the warehouse column with zeros
            log("demand", epoch, np.pad(demand, ((0, 0), (1, 0))))
        if logged["shortage"]:
            shortage[:, 0] = (wanted - shipped).sum(axis=1)
            shortage[:, 1:] = short
            log("shortage", epoch, shortage)
        if logged["lost"]:
            log("lost", epoch, np.pad(short, ((0, 0), (1, 0))))
        if logged["orders"]:
            orders[:, 0] = wh_wanted
            orders[:, 1:] = wanted
            log("orders", epoch, orders)

    served = totals["demand"] - totals["lost_or_backordered"]
    days = max(n_days, 1)
    return {
        "days": float(n_days),
        "fill_rate": served / totals["demand"] if totals["demand"] else 1.0,
        "mean_store_stock": float(stock_days[1:].sum() / days),
        "mean_warehouse_stock": float(stock_days[0] / days),
        "store_orders": float(totals["store_orders"]),
        "supplier_orders": float(totals["supplier_orders"]),
    }
