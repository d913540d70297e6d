"""Passengers at the hub as per-minute cohorts, exact and vectorised.

``remaining[r, d, m]`` counts passengers for route ``r`` and destination ``d`` (index into the
route's ``stops[1:]``) who arrived during minute ``m`` and are still on the platform. A cohort
waits at most ``patience`` minutes: cohort ``m`` leaves (reneges) at minute ``m + patience``.
Boarding is FIFO over arrival minutes, up to the train's capacity, among the destinations the
train serves; within one minute the seats are split proportionally over destinations. Arrivals
that would push the platform above its capacity are refused at the gate. Every passenger is
counted exactly once: ``arrived = boarded + waiting + reneged + refused``.
"""

from __future__ import annotations

import numpy as np


def split_proportionally(cells: np.ndarray, n: int) -> np.ndarray:
    """Integer amounts <= ``cells`` summing to ``n`` (<= cells.sum()), proportional to ``cells``."""
    total = int(cells.sum())
    if n >= total:
        return cells.copy()
    share = cells * n
    take = share // total
    short = n - int(take.sum())
    if short:
        # Largest remainders first; a cell with a remainder still has passengers left to take.
        order = np.argsort(-(share - take * total), kind="stable")[:short]
        take[order] += 1
    return take


class Passengers:
    """Cohort state of the hub platform; all counts are integer persons, times integer minutes.

    ``advance`` must not skip more than ``patience`` minutes at once (the model's epochs are shorter).
    """

    def __init__(self, arrivals: np.ndarray, patience: int, capacity: int, crowd_threshold: int) -> None:
        self.arrivals = arrivals
        self.remaining = arrivals.copy()
        self.patience = patience
        self.capacity = capacity
        self.crowd_threshold = crowd_threshold
        n_routes, _, n_minutes = arrivals.shape
        self.route_cohorts = self.remaining.sum(axis=1)  # (routes, minutes), kept in sync with remaining
        self._arrived_by = np.cumsum(self.route_cohorts.sum(axis=0))  # arrivals up to and including minute m
        self.waiting_log = np.zeros((n_routes, n_minutes), dtype=np.int64)  # true waiting per route per minute
        # passengers who left the platform by minutes waited: boarded after 0..patience-1, gave up at patience
        self.wait_hist = np.zeros(patience + 1, dtype=np.int64)
        self.now = 0
        self.boarded = 0
        self.reneged = 0
        self.refused = 0
        self.denied = 0
        self.overcrowd_person_min = 0.0
        total = int(self.route_cohorts[:, 0].sum())
        if total > capacity:
            self._refuse(0, total - capacity)
        self.waiting_now = self.route_cohorts[:, 0].copy()  # true waiting per route at ``now``
        self.waiting_log[:, 0] = self.waiting_now
        self.peak_waiting = int(self.waiting_now.sum())
        self.overcrowd_person_min += max(0, self.peak_waiting - crowd_threshold)

    # -- queries -------------------------------------------------------------------------------
    @property
    def arrived(self) -> int:
        return int(self._arrived_by[self.now])

    def waiting_by_route(self) -> np.ndarray:
        return self.waiting_now.copy()

    def waiting(self) -> int:
        return int(self.waiting_now.sum())

    # -- dynamics ------------------------------------------------------------------------------
    def board(self, route: int, served: np.ndarray, capacity: int) -> int:
        """Board a train of ``capacity`` persons on ``route`` serving destinations ``served`` now."""
        t = self.now
        lo = max(0, t - self.patience + 1)
        block = self.remaining[route, served, lo : t + 1]
        per_minute = block.sum(axis=0)
        total = int(per_minute.sum())
        if total == 0:
            return 0
        if total <= capacity:
            self.remaining[route, served, lo : t + 1] = 0
            taken = per_minute
            n = total
        else:
            cum = np.cumsum(per_minute)
            full = int(np.searchsorted(cum, capacity, side="right"))
            need = capacity - (int(cum[full - 1]) if full else 0)
            take = np.zeros_like(block)
            take[:, :full] = block[:, :full]
            take[:, full] = split_proportionally(block[:, full], need)
            self.remaining[route, served, lo : t + 1] = block - take
            self.denied += total - capacity
            taken = take.sum(axis=0)
            n = capacity
        self.route_cohorts[route, lo : t + 1] -= taken
        self.wait_hist[: t + 1 - lo] += taken[::-1]  # cohort m waited t - m minutes
        self.waiting_now[route] -= n
        self.waiting_log[route, t] -= n
        self.boarded += n
        return n

    def advance(self, until: int) -> None:
        """Let minutes ``now+1 .. until`` pass: arrivals, gate refusals, reneging, crowd statistics."""
        t0, p = self.now, self.patience
        if until <= t0:
            return
        if until - t0 > p:
            raise ValueError(f"advance by at most patience={p} minutes at once, got {until - t0}")
        delta = self.route_cohorts[:, t0 + 1 : until + 1].copy()  # arrivals of each minute
        # Cohort k - p leaves at minute k: those with m in [gone_lo, gone_hi) leave in this advance.
        gone_lo, gone_hi = max(0, t0 + 1 - p), until + 1 - p
        if gone_hi > gone_lo:
            leaving = self.route_cohorts[:, gone_lo:gone_hi]
            delta[:, delta.shape[1] - leaving.shape[1] :] -= leaving
            self.reneged += int(leaving.sum())
            self.wait_hist[p] += int(leaving.sum())
            self.remaining[:, :, gone_lo:gone_hi] = 0
            self.route_cohorts[:, gone_lo:gone_hi] = 0
        per_route = self.waiting_now[:, None] + np.cumsum(delta, axis=1)
        total = per_route.sum(axis=0)
        peak = int(total.max())
        if peak > self.capacity:
            peak = self._refuse_excess(t0, per_route, total)
        self.waiting_log[:, t0 + 1 : until + 1] = per_route
        self.waiting_now = per_route[:, -1].copy()
        if peak > self.crowd_threshold:
            over = total - self.crowd_threshold
            self.overcrowd_person_min += float(over[over > 0].sum())
        if peak > self.peak_waiting:
            self.peak_waiting = peak
        self.now = until

    def _refuse(self, minute: int, n: int) -> np.ndarray:
        cohort = self.remaining[:, :, minute]
        take = split_proportionally(cohort.ravel(), n).reshape(cohort.shape)
        self.remaining[:, :, minute] -= take
        by_route = take.sum(axis=1)
        self.route_cohorts[:, minute] -= by_route
        self.refused += n
        return by_route

    def _refuse_excess(self, t0: int, per_route: np.ndarray, total: np.ndarray) -> int:
        """Refuse arrivals minute by minute while the platform would exceed its capacity
        (``per_route`` and ``total`` are corrected in place); return the corrected peak."""
        for i in range(total.shape[0]):
            excess = int(total[i]) - self.capacity
            if excess > 0:  # excess <= arrivals of this minute, since the minute before was within capacity
                by_route = self._refuse(t0 + 1 + i, excess)
                # A refused arrival would have waited for the rest of this advance (< patience).
                per_route[:, i:] -= by_route[:, None]
                total[i:] -= excess
        return int(total.max())
