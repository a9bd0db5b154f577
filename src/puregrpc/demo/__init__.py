"""A demo: a greeter and a route guide, served from protobuf descriptors.

``register(server)`` adds both services with health checking and server
reflection (so ``grpcurl`` can list, describe and call them);
``puregrpc serve puregrpc.demo:register`` or ``python -m puregrpc.demo`` serves
them. The message classes are public here, for clients::

    from puregrpc.demo import HelloRequest, HelloReply
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Dict, Iterator, List, Tuple

from .. import _descriptors
from ..health import SERVICE_NAME as HEALTH_SERVICE_NAME
from ..health import SERVING, HealthServicer, add_health_servicer
from ..reflection import enable_server_reflection
from . import _proto as pb
from ._proto import (
    DESCRIPTOR,
    Feature,
    HelloReply,
    HelloRequest,
    Point,
    Rectangle,
    RouteNote,
    RouteSummary,
)

#: The demo's services, by full name.
SERVICE_NAMES = (pb.GREETER.full_name, pb.ROUTE_GUIDE.full_name)

# A few named places on a 1e7-scaled grid, as the classic route guide.
_FEATURES: List[Tuple[str, int, int]] = [
    ("Patriots Path, Mendham, NJ 07945, USA", 407838351, -746143763),
    ("101 New Jersey 10, Whippany, NJ 07981, USA", 408122808, -743999179),
    ("U.S. 6, Shohola, PA 18458, USA", 413628156, -749015468),
    ("5 Conners Road, Kingston, NY 12401, USA", 419999544, -740371136),
    ("Mount Hope Road, Wharton, NJ 07885, USA", 409146138, -746188906),
]


class Greeter:
    def SayHello(self, request: Any, context: Any) -> Any:
        return pb.HelloReply(message=f"Hello, {request.name or 'world'}!")

    def SayHelloStream(self, request: Any, context: Any) -> Iterator[Any]:
        for index in range(max(1, request.count)):
            if not context.is_active():
                return
            yield pb.HelloReply(message=f"Hello #{index + 1}, {request.name or 'world'}!")


def _distance(a: Any, b: Any) -> int:
    """Great-circle distance in metres between two 1e7-scaled points."""
    lat1, lat2 = math.radians(a.latitude / 1e7), math.radians(b.latitude / 1e7)
    dlat = lat2 - lat1
    dlon = math.radians((b.longitude - a.longitude) / 1e7)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return int(6371000 * 2 * math.atan2(math.sqrt(h), math.sqrt(1 - h)))


class RouteGuide:
    def __init__(self) -> None:
        self._features = [
            pb.Feature(name=name, location=pb.Point(latitude=lat, longitude=lon)) for name, lat, lon in _FEATURES
        ]
        self._notes: Dict[Tuple[int, int], List[Any]] = {}
        self._lock = threading.Lock()

    def _find(self, point: Any) -> Any:
        for feature in self._features:
            if feature.location == point:
                return feature
        return pb.Feature(name="", location=point)

    def GetFeature(self, request: Any, context: Any) -> Any:
        return self._find(request)

    def ListFeatures(self, request: Any, context: Any) -> Iterator[Any]:
        lo, hi = request.lo, request.hi
        left, right = sorted((lo.longitude, hi.longitude))
        bottom, top = sorted((lo.latitude, hi.latitude))
        for feature in self._features:
            loc = feature.location
            if left <= loc.longitude <= right and bottom <= loc.latitude <= top:
                yield feature

    def RecordRoute(self, request_iterator: Iterator[Any], context: Any) -> Any:
        start = time.monotonic()
        count = features = distance = 0
        previous = None
        for point in request_iterator:
            count += 1
            if self._find(point).name:
                features += 1
            if previous is not None:
                distance += _distance(previous, point)
            previous = point
        return pb.RouteSummary(
            point_count=count,
            feature_count=features,
            distance=distance,
            elapsed_time=int(time.monotonic() - start),
        )

    def RouteChat(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        for note in request_iterator:
            key = (note.location.latitude, note.location.longitude)
            with self._lock:
                earlier = list(self._notes.get(key, ()))
                self._notes.setdefault(key, []).append(note)
            yield from earlier


def add_services(server: Any) -> None:
    """Add the demo's Greeter and RouteGuide services (only) to ``server``."""
    _descriptors.add_servicer(server, pb.GREETER, Greeter())
    _descriptors.add_servicer(server, pb.ROUTE_GUIDE, RouteGuide())


def register(server: Any) -> HealthServicer:
    """Add Greeter and RouteGuide to ``server``, with health checking (every demo service
    SERVING) and server reflection v1/v1alpha for them; return the health servicer."""
    add_services(server)
    health: HealthServicer = add_health_servicer(server)
    for name in SERVICE_NAMES:
        health.set(name, SERVING)
    enable_server_reflection([*SERVICE_NAMES, HEALTH_SERVICE_NAME], server)
    return health


__all__ = [
    "DESCRIPTOR",
    "SERVICE_NAMES",
    "Feature",
    "Greeter",
    "HelloReply",
    "HelloRequest",
    "Point",
    "Rectangle",
    "RouteGuide",
    "RouteNote",
    "RouteSummary",
    "add_services",
    "register",
]
