"""Routes through a profile's hardware graph, found once; each link direction is one server.

Rules (docs/metrics.md, "Tiers and routes"):
- The *target* is the memory of the processor that runs experts (profile.expert_processor).
- Every other memory that can reach the target gets its *widest path* (largest bottleneck
  bandwidth; ties: fewer hops). A link out of a storage memory is as wide as min(link bandwidth,
  the device's best throughput at the link's request size).
- Storage reads: "direct" (O_DIRECT, GPUDirect) removes page-cache memories from the graph;
  "buffered" (or mmap) removes the links that read storage into anything but a page cache, so
  reads go storage -> page cache -> ... (TimedConfig.storage_reads overrides the profile).
- Objects live in their *home*: the widest-reached memory whose usable bytes hold every object,
  else the largest one. A path home -> target has one link, or two: then the middle memory is a
  staging cache over the home (DRAM over SSD, the page cache over SSD) with its usable bytes.
- The planner names three route roles: LAST (near home or staging cache -> target), STAGE (home ->
  staging cache, or where the CPU reads far objects from), DIRECT (far home -> target).
A server is one link direction (full duplex: one per direction; half duplex: both share one):
`slots` transfers in flight (copy engines, or read lanes out of storage) share aggregate(n); each
transfer first waits the link's latency (plus the storage read latency). Out of storage,
aggregate(n) = min(link bandwidth, curve(request_size, n x requests_per_read)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from moesim.errors import UserError
from moesim.hw_profiles.profile import HardwareProfile, Link, Memory, StorageCurve

ROUTE_LAST = 0  # near home or staging cache -> the expert processor's memory
ROUTE_STAGE = 1  # far home -> staging cache (or -> the CPU's memory when nothing stages)
ROUTE_DIRECT = 2  # far home -> the expert processor's memory
ROUTE_NAMES = ("host", "ssd_dram", "ssd_vram")  # labels kept from the pre-graph engine (decision logs)
ROUTE_HOST, ROUTE_SSD_DRAM, ROUTE_SSD_VRAM = ROUTE_LAST, ROUTE_STAGE, ROUTE_DIRECT  # pre-graph names

MAX_PATHS = 10_000


@dataclass(frozen=True)
class LinkServer:
    """One link direction in the engine: `slots` transfers share `aggregate(n)` bytes/s."""

    link: str
    src: str
    dst: str
    slots: int
    latency: float  # seconds per transfer before its bytes flow (link + storage read latency)
    bandwidth: float  # the link's ceiling, bytes/s (pageable where the profile says so)
    curve: StorageCurve | None = None  # storage read throughput (reads out of a storage memory)
    request_size: float = float(1 << 20)
    requests_per_read: int = 1  # the device sees n x this requests with n reads in flight
    shares: tuple[float, ...] = field(default=(), compare=False)  # per-transfer bytes/s with n in flight

    def __post_init__(self) -> None:
        object.__setattr__(self, "shares", tuple([0.0] + [self.aggregate(n) / n for n in range(1, self.slots + 1)]))

    def aggregate(self, n: int) -> float:
        if n <= 0:
            return 0.0
        if self.curve is None:
            return self.bandwidth
        return min(self.bandwidth, self.curve.bandwidth(self.request_size, n * self.requests_per_read))

    def peak(self) -> float:
        """The most bytes/s the server moves (any number of transfers in flight up to its slots)."""
        return max(self.aggregate(n) for n in range(1, self.slots + 1))

    def alone(self, nbytes: float) -> float:
        """Seconds for one transfer with nothing else on the server."""
        return self.latency + nbytes / self.shares[1]


@dataclass(frozen=True)
class Topology:
    target: str  # memory of the expert processor
    home: str  # memory objects live in
    far: bool  # home is storage: a processor cannot compute from it without a read
    stage: str | None  # staging cache between home and target, if any
    dram_cache_bytes: int | None  # the staging cache's usable bytes (planner's second cache core)
    servers: tuple[LinkServer, ...]
    route_server: tuple[int, int, int]  # server index per route role (-1: the role is not used)
    cpu_links: tuple[Link | None, Link | None] = (None, None)  # target -> CPU memory, back (activations)
    pageable: bool = False

    # -- views the planner, bounds and results read -------------------------------------------
    def server_of(self, route: int) -> LinkServer | None:
        i = self.route_server[route]
        return self.servers[i] if i >= 0 else None

    @property
    def last_hop_route(self) -> int:
        """The route every byte entering the target takes last."""
        return ROUTE_DIRECT if self.far and self.stage is None else ROUTE_LAST

    def last_hop_bandwidth(self) -> float:
        """Most bytes/s into the target: the time bound's link and the prefetch budget."""
        server = self.server_of(self.last_hop_route)
        return server.peak() if server else 0.0

    def ssd_bandwidth(self) -> float:
        """Most bytes/s out of the far home (staging reads)."""
        server = self.server_of(ROUTE_STAGE if self.stage else ROUTE_DIRECT) if self.far else None
        return server.peak() if server else 0.0

    def route_link(self, route: int) -> str:
        server = self.server_of(route)
        assert server is not None
        return server.link

    def link_names(self) -> dict[int, str]:
        """Route role -> link name, for the roles in use."""
        return {r: self.servers[i].link for r, i in enumerate(self.route_server) if i >= 0}

    # pre-graph views (the real-GPU executor and reports read these)
    @property
    def host_link(self) -> str | None:
        return None if self.last_hop_route == ROUTE_DIRECT else self.route_link(ROUTE_LAST)

    @property
    def ssd_link(self) -> str | None:
        if not self.far:
            return None
        return self.route_link(ROUTE_STAGE if self.stage else ROUTE_DIRECT)

    @property
    def host_engines(self) -> int:
        server = self.server_of(ROUTE_LAST)
        return server.slots if server else 1

    @property
    def ssd_slots(self) -> int:
        server = self.server_of(ROUTE_STAGE if self.stage else ROUTE_DIRECT) if self.far else None
        return server.slots if server else 1

    @property
    def host_bandwidth(self) -> float:
        server = self.server_of(ROUTE_LAST)
        return server.bandwidth if server else 0.0

    @property
    def d2h_link(self) -> str | None:
        return self.cpu_links[0].name if self.cpu_links[0] else None

    def activation_time(self, nbytes, pageable: bool = False):  # noqa: ANN001, ANN201 - floats or arrays
        """Seconds to send activations to the CPU's memory and the results back (0 on one memory)."""
        out, back = self.cpu_links
        return (out.copy_time(nbytes, pageable) if out else 0.0) + (back.copy_time(nbytes, pageable) if back else 0.0)


def link_directions(profile: HardwareProfile, reads: str) -> dict[tuple[str, str], Link]:
    """(src, dst) -> the link that carries it (the widest, if several), under the storage-read mode."""
    mems = profile.tiers
    has_page_cache = any(m.is_page_cache for m in mems.values())
    out: dict[tuple[str, str], Link] = {}
    for link in profile.links.values():
        pairs = [(link.src, link.dst)] + ([(link.dst, link.src)] if link.duplex != "simplex" else [])
        for src, dst in pairs:
            if src not in mems or dst not in mems:
                continue
            if reads == "direct" and (mems[src].is_page_cache or mems[dst].is_page_cache):
                continue
            if reads == "buffered" and has_page_cache and mems[src].is_storage and not mems[dst].is_page_cache:
                continue
            bw = link.bandwidth if (src, dst) == (link.src, link.dst) else (link.reverse_bandwidth or link.bandwidth)
            if (src, dst) not in out or bw > _bw(out[(src, dst)], src, dst):
                out[(src, dst)] = link
    return out


def _bw(link: Link, src: str, dst: str) -> float:
    return link.bandwidth if (src, dst) == (link.src, link.dst) else (link.reverse_bandwidth or link.bandwidth)


def _width(profile: HardwareProfile, link: Link, src: str, dst: str) -> float:
    bw = _bw(link, src, dst)
    mem = profile.tiers[src]
    if mem.is_storage and mem.throughput is not None:
        size = link.request_size or mem.request_size or float(1 << 20)
        best = max(mem.throughput.bandwidth(size, p.queue_depth) for p in mem.throughput.points)
        bw = min(bw, best)
    return bw


def widest_paths(profile: HardwareProfile, target: str, reads: str) -> dict[str, list[str]]:
    """Memory -> its widest path to `target` (list of memories, home first), for every memory reaching it."""
    edges = link_directions(profile, reads)
    into: dict[str, list[str]] = {}
    for src, dst in edges:
        into.setdefault(dst, []).append(src)
    best: dict[str, tuple[float, int, list[str]]] = {}
    stack: list[tuple[list[str], float]] = [([target], float("inf"))]
    explored = 0
    while stack:  # every simple path ending at the target (profile graphs are small)
        path, width = stack.pop()
        explored += 1
        if explored > MAX_PATHS:
            raise UserError("the link graph has too many paths to search", f"profile {profile.name}")
        for src in sorted(into.get(path[0], [])):
            if src in path:
                continue
            w = min(width, _width(profile, edges[(src, path[0])], src, path[0]))
            new = [src] + path
            key = (w, -len(new))
            if src not in best or key > (best[src][0], -best[src][1]):
                best[src] = (w, len(new), new)
            stack.append((new, w))
    return {m: v[2] for m, v in best.items()}


def build_topology(profile: HardwareProfile, total_object_bytes: int, io_lanes: int | None = None,
                   storage_reads: str | None = None) -> Topology:
    """Resolve `profile`'s routes for a workload of `total_object_bytes`; UserError if impossible.

    `io_lanes` overrides the read lanes (reads in flight) of servers reading storage;
    `storage_reads` ("direct" | "buffered") overrides the profile's.
    """
    where = f"profile {profile.name}"
    reads = storage_reads or profile.storage_reads
    if reads not in ("direct", "buffered"):
        raise UserError(f"storage reads must be direct or buffered, got {reads!r}", "storage_reads")
    if io_lanes is not None and io_lanes < 1:
        raise UserError(f"io lanes must be at least 1, got {io_lanes}", "io_lanes")
    target = profile.device.memory
    mems = profile.tiers
    paths = widest_paths(profile, target, reads)
    candidates = [m for m in paths if not mems[m].is_page_cache]
    if not candidates:
        raise UserError(f"no link into the cache tier {target!r} (the memory processor "
                        f"{profile.expert_processor!r} reads) from any other memory", where)
    edges = link_directions(profile, reads)
    order = sorted(candidates, key=lambda m: (-_path_width(profile, edges, paths[m]), len(paths[m]), m))
    fits = [m for m in order if mems[m].usable >= total_object_bytes]
    home = fits[0] if fits else max(order, key=lambda m: (mems[m].usable, -order.index(m)))
    path = paths[home]
    if len(path) > 3:
        raise UserError(f"the route {' -> '.join(path)} stages in more than one memory; the planner stages in at "
                        "most one (add a direct link or drop a memory)", where)
    far = mems[home].is_storage
    stage = path[1] if len(path) == 3 else None
    servers: list[LinkServer] = []
    index: dict[tuple[str, str, str], int] = {}

    def server(src: str, dst: str) -> int:
        link = edges[(src, dst)]
        key = (link.name, *sorted((src, dst))) if link.duplex == "half" else (link.name, src, dst)
        if key not in index:
            index[key] = len(servers)
            servers.append(_server(profile, link, src, dst, io_lanes))
        return index[key]

    route = [-1, -1, -1]
    if len(path) == 2:
        route[ROUTE_DIRECT if far else ROUTE_LAST] = server(path[0], path[1])
    elif stage is not None:
        route[ROUTE_STAGE] = server(path[0], stage)
        route[ROUTE_LAST] = server(stage, target)
    cpu = profile.processors.get("cpu")
    cpu_links: tuple[Link | None, Link | None] = (None, None)
    if cpu is not None and cpu.memory != target:
        cpu_links = (edges.get((target, cpu.memory)) or edges.get((target, home)),
                     edges.get((cpu.memory, target)))
    if far and stage is None and cpu is not None and cpu.memory != target and (home, cpu.memory) in edges:
        route[ROUTE_STAGE] = server(home, cpu.memory)  # the CPU reads far objects into its own memory
    elif far and stage is None:
        route[ROUTE_STAGE] = route[ROUTE_DIRECT]
    stage_bytes = int(max(mems[stage].usable, 0)) if stage is not None else None
    return Topology(target=target, home=home, far=far, stage=stage, dram_cache_bytes=stage_bytes,
                    servers=tuple(servers), route_server=(route[0], route[1], route[2]), cpu_links=cpu_links,
                    pageable=profile.pageable)


def _path_width(profile: HardwareProfile, edges: dict[tuple[str, str], Link], path: list[str]) -> float:
    return min((_width(profile, edges[(a, b)], a, b) for a, b in zip(path, path[1:]) if (a, b) in edges),
               default=float("inf"))


def _server(profile: HardwareProfile, link: Link, src: str, dst: str, io_lanes: int | None) -> LinkServer:
    mem: Memory = profile.tiers[src]
    bw = _bw(link, src, dst)
    if profile.pageable and link.pageable_bandwidth and not mem.is_storage:
        bw = link.pageable_bandwidth
    if bw <= 0:
        raise UserError(f"link {link.name} bandwidth must be positive", f"profile {profile.name}")
    if mem.is_storage:
        lanes = io_lanes or mem.read_lanes or link.copy_engines
        size = link.request_size or mem.request_size or float(1 << 20)
        return LinkServer(link.name, src, dst, int(lanes), link.latency + (mem.latency or 0.0), bw, mem.throughput,
                          float(size), int(mem.requests_per_read or 1))
    return LinkServer(link.name, src, dst, int(link.copy_engines), link.latency, bw)
