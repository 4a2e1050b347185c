"""Plans for static routes (nsnet.routes): forwarding switched on inside the sandbox for the
route's family when it is its first (off again with its last), then the route."""

from __future__ import annotations

from ..model import Route
from ..routes import FORWARDING
from .ops import AddRoute, DeleteRoute, EnsureSysctl, Operation


def plan_route(route: Route) -> list[Operation]:
    return [EnsureSysctl(FORWARDING[route.dst.version], "1", route.sandbox),
            AddRoute(route.sandbox, route.dst, route.via)]


def plan_unroute(route: Route, last_of_family: bool) -> list[Operation]:
    ops: list[Operation] = [DeleteRoute(route.sandbox, route.dst, route.via)]
    if last_of_family:
        ops.append(EnsureSysctl(FORWARDING[route.dst.version], "0", route.sandbox))
    return ops
