"""Where objects live and which link a copy takes, read from a HardwareProfile.

Rules (docs/metrics.md, "Tiers and routes"):
- The cache tier is "vram" (the memory the compute device reads). The host link into it is "c2c"
  when the profile has one (GH200), else "h2d". A profile with neither has unified memory (Apple
  silicon, phones): objects then live on SSD and are read straight into the cache tier.
- With a host link, objects live in host DRAM when the profile has no "dram" tier, no "ssd" tier,
  or a DRAM tier whose usable bytes hold every object. Otherwise they live on SSD and DRAM is an
  LRU cache over it (copies go ssd -> dram over "ssd_h", then dram -> vram), unless the profile has
  GPUDirect Storage ("ssd_d"): then copies go ssd -> vram directly and DRAM is not used.
- SSD reads share one queue of `queue_depth` slots (tier.queue_depth, else the SSD link's
  copy_engines); each slot reads at min(tier read bandwidth, link bandwidth) / queue_depth after
  link latency + tier latency, so one read alone does not get the drive's full bandwidth.
Host-link copies take latency + bytes / bandwidth (pageable bandwidth when host_memory is
"pageable") on one of the link's copy engines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.errors import UserError
from moesim.hw_profiles.profile import HardwareProfile

# copy routes
ROUTE_HOST = 0  # dram -> vram over the host link (h2d or c2c)
ROUTE_SSD_DRAM = 1  # ssd -> dram over ssd_h (DRAM is a cache over SSD)
ROUTE_SSD_VRAM = 2  # ssd -> vram over ssd_d (GPUDirect) or ssd_h (unified memory)
ROUTE_NAMES = ("host", "ssd_dram", "ssd_vram")

# copy servers (the simpy resources a copy occupies)
SERVER_HOST = 0
SERVER_SSD = 1


@dataclass(frozen=True)
class Topology:
    home: str  # "dram" | "ssd"
    host_link: str | None  # "c2c" | "h2d" | None (unified memory)
    ssd_link: str | None  # link SSD reads take ("ssd_d" or "ssd_h")
    ssd_direct: bool  # SSD reads land in the cache tier (GPUDirect or unified memory)
    dram_cache_bytes: int | None  # DRAM cache capacity when DRAM caches SSD, else None
    host_engines: int
    ssd_slots: int
    host_bandwidth: float  # bytes/s of one host-link copy (pinned or pageable as the profile says)
    host_latency: float
    ssd_slot_bandwidth: float  # bytes/s of one SSD read slot
    ssd_latency: float  # link + tier latency per read
    d2h_link: str | None  # link activations take back to the host (cpu miss handling)

    @property
    def last_hop_route(self) -> int:
        """The route every byte entering the cache tier takes last."""
        return ROUTE_HOST if self.host_link is not None and not (self.home == "ssd" and self.ssd_direct) else ROUTE_SSD_VRAM

    def last_hop_bandwidth(self) -> float:
        """Aggregate bytes/s into the cache tier (all engines or slots busy): the time bound's link."""
        if self.last_hop_route == ROUTE_HOST:
            return self.host_bandwidth * self.host_engines
        return self.ssd_slot_bandwidth * self.ssd_slots

    def ssd_bandwidth(self) -> float:
        """Aggregate SSD read bytes/s (all slots busy)."""
        return self.ssd_slot_bandwidth * self.ssd_slots if self.ssd_link else 0.0

    def route_link(self, route: int) -> str:
        if route == ROUTE_HOST:
            assert self.host_link is not None
            return self.host_link
        assert self.ssd_link is not None
        return self.ssd_link

    def copy_durations(self, routes: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """Seconds each copy occupies its server (vectorised)."""
        routes = np.asarray(routes)
        nbytes = np.asarray(nbytes, dtype=np.float64)
        out = np.empty(nbytes.shape, dtype=np.float64)
        host = routes == ROUTE_HOST
        if host.any():
            out[host] = self.host_latency + nbytes[host] / self.host_bandwidth
        ssd = ~host
        if ssd.any():
            out[ssd] = self.ssd_latency + nbytes[ssd] / self.ssd_slot_bandwidth
        return out


def build_topology(profile: HardwareProfile, total_object_bytes: int) -> Topology:
    """Resolve the routes of `profile` for a workload of `total_object_bytes`; UserError if impossible."""
    where = f"profile {profile.name}"
    if profile.tier("vram") is None:
        raise UserError("has no 'vram' tier (the memory the compute device reads)", where)
    host_name = "c2c" if profile.link("c2c") is not None else ("h2d" if profile.link("h2d") is not None else None)
    dram = profile.tier("dram")
    ssd = profile.tier("ssd")
    ssd_link_name = "ssd_d" if profile.link("ssd_d") is not None else ("ssd_h" if profile.link("ssd_h") is not None else None)

    if host_name is None:
        if ssd_link_name is None:
            raise UserError("has no link into the cache tier (need links h2d, c2c, ssd_h or ssd_d)", where)
        home, ssd_direct, dram_cache = "ssd", True, None
    elif dram is None or ssd is None or dram.usable >= total_object_bytes:
        home, ssd_direct, dram_cache = "dram", False, None
    elif profile.link("ssd_d") is not None:
        home, ssd_direct, dram_cache = "ssd", True, None
    else:
        if profile.link("ssd_h") is None:
            raise UserError("DRAM cannot hold every object and there is no 'ssd_h' link to read the rest", where)
        home, ssd_direct, dram_cache, ssd_link_name = "ssd", False, int(max(dram.usable, 0)), "ssd_h"

    host_bw = host_lat = 0.0
    host_engines = 1
    if host_name is not None:
        link = profile.links[host_name]
        host_bw = link.pageable_bandwidth if profile.pageable and link.pageable_bandwidth else link.bandwidth
        host_lat = link.latency
        host_engines = max(int(link.copy_engines), 1)
        if host_bw <= 0:
            raise UserError(f"link {host_name} bandwidth must be positive", where)

    slot_bw = ssd_lat = 0.0
    slots = 1
    if home == "ssd":
        link = profile.links[ssd_link_name]  # type: ignore[index]
        slots = int(ssd.queue_depth) if ssd is not None and ssd.queue_depth else max(int(link.copy_engines), 1)
        drive_bw = ssd.read_bandwidth if ssd is not None and ssd.read_bandwidth else link.bandwidth
        aggregate = min(drive_bw, link.bandwidth)
        if aggregate <= 0 or slots <= 0:
            raise UserError(f"SSD read bandwidth and queue depth must be positive (link {ssd_link_name})", where)
        slot_bw = aggregate / slots
        ssd_lat = link.latency + ((ssd.latency or 0.0) if ssd is not None else 0.0)

    d2h = "d2h" if profile.link("d2h") is not None else host_name
    return Topology(
        home=home,
        host_link=host_name,
        ssd_link=ssd_link_name if home == "ssd" else None,
        ssd_direct=ssd_direct,
        dram_cache_bytes=dram_cache,
        host_engines=host_engines,
        ssd_slots=slots,
        host_bandwidth=float(host_bw),
        host_latency=float(host_lat),
        ssd_slot_bandwidth=float(slot_bw),
        ssd_latency=float(ssd_lat),
        d2h_link=d2h,
    )
