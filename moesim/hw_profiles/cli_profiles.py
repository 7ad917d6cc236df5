"""`moesim profiles list|show|validate`: hardware profiles with units and provenance."""

from __future__ import annotations

import argparse
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.hw_profiles import legacy
from moesim.hw_profiles.loader import list_profiles, load_profile, profile_from_yaml, profile_values
from moesim.hw_profiles.profile import HardwareProfile
from moesim.units import format_bytes, format_quantity
from moesim.yaml_io import read_yaml_mapping

KIND_OF_UNIT = {"B": "bytes", "B/s": "bandwidth", "s": "time", "FLOP/s": "flops", "W": "power", "J/B": "energy_per_byte"}


def profile_summary(profile: HardwareProfile) -> dict[str, Any]:
    """One row of `profiles list`: the figures that decide offload behaviour."""
    host = profile.host_link()
    ssd = profile.ssd_link()
    return {
        "name": profile.name,
        "description": profile.description,
        "cache_tier_usable_bytes": profile.tiers[profile.device.memory].usable,
        "memory_bandwidth": profile.device.memory_bandwidth,
        "host_link": None if host is None else {"name": host.name, "bandwidth": host.bandwidth},
        "ssd_link": None if ssd is None else {"name": ssd.name, "bandwidth": ssd.bandwidth},
        "tiers": list(profile.tiers),
        "processors": list(profile.processors),
    }


def profile_routes(profile: HardwareProfile) -> dict[str, Any]:
    """Every memory's widest path to the memory the expert processor reads, for each storage-read mode."""
    from moesim.sim.topology import link_directions, widest_paths

    target = profile.device.memory
    out: dict[str, Any] = {"target": target, "expert_processor": profile.expert_processor}
    for reads in ("direct", "buffered"):
        edges = link_directions(profile, reads)
        out[reads] = {mem: {"memories": path, "links": [edges[(a, b)].name for a, b in zip(path, path[1:])]}
                      for mem, path in sorted(widest_paths(profile, target, reads).items())}
    return out


def _render_list(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'name':20s} {'cache tier':>11s} {'mem BW':>9s} {'host link':>15s} {'ssd link':>15s}"]
    for r in rows:
        host = f"{r['host_link']['name']} {r['host_link']['bandwidth'] / 1e9:.3g} GB/s" if r["host_link"] else "-"
        ssd = f"{r['ssd_link']['name']} {r['ssd_link']['bandwidth'] / 1e9:.3g} GB/s" if r["ssd_link"] else "-"
        lines.append(
            f"{r['name']:20s} {format_bytes(r['cache_tier_usable_bytes']):>11s} "
            f"{r['memory_bandwidth'] / 1e9:6.4g} GB/s {host:>15s} {ssd:>15s}"
        )
    return "\n".join(lines)


def _shown(value: dict[str, Any]) -> str:
    kind = KIND_OF_UNIT.get(value["unit"])
    return format_quantity(value["value"], kind) if kind else str(value["value"])


def _render_show(data: dict[str, Any]) -> str:
    lines = [f"{data['name']}: {data['description']}"]
    for key in ("framework", "overlap", "host_memory", "storage_reads", "expert_processor"):
        lines.append(f"  {key}: {data.get(key) or '-'}")

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict) and "points" in value:
                lines.append(f"    {path:36s} {'(request size, queue depth) -> throughput':>14s}   {value['provenance']}")
                for p in value["points"]:
                    lines.append(f"      {format_bytes(p['request_size']):>10s} x {p['queue_depth']:<3d} -> "
                                 f"{format_quantity(p['bandwidth'], 'bandwidth')}")
            elif isinstance(value, dict) and "unit" in value:
                lines.append(f"    {path:36s} {_shown(value):>14s}   {value['provenance']}")
            elif isinstance(value, dict):
                walk(value, path)
            elif not isinstance(value, list):
                lines.append(f"    {path:36s} {value!s:>14s}")

    for section, title in (("memories", "memories"), ("processors", "processors"), ("links", "links (from -> to)"),
                           ("power", "power")):
        if data.get(section):
            lines.append(f"  {title}:")
            walk(data[section], section)
    routes = data.get("routes")
    if routes:
        lines.append(f"  routes to {routes['target']} (read by processor {routes['expert_processor']}; widest path "
                     "first, the home is the first memory that holds every object):")
        for reads in ("direct", "buffered"):
            for mem, route in routes[reads].items():
                hops = "".join(f" -{link}-> {m}" for link, m in zip(route["links"], route["memories"][1:]))
                lines.append(f"    {reads:8s} {mem:12s} {route['memories'][0]}{hops}")
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    emit(args, [profile_summary(load_profile(name)) for name in list_profiles()], _render_list)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile, args.set or ())
    emit(args, dict(profile_values(profile), routes=profile_routes(profile)), _render_show)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    profile = profile_from_yaml(args.file)  # a UserError here prints the one-line reason, exit 1
    note = ""
    if legacy.is_legacy(read_yaml_mapping(args.file)):
        note = f"; {legacy.MIGRATE_HINT}"
    print(f"OK: {args.file} ({profile.name}){note}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("profiles", help="list, show and validate hardware profiles")
    sub = parser.add_subparsers(dest="profiles_command", metavar="SUBCOMMAND", parser_class=type(parser))
    p_list = sub.add_parser("list", help="the shipped hardware profiles")
    add_json_flag(p_list)
    p_list.set_defaults(func=_cmd_list)
    p_show = sub.add_parser("show", help="the graph: memories, processors, links, routes; every value in SI units "
                                         "with its provenance")
    p_show.add_argument("profile", help="profile name (see `moesim profiles list`) or path to a profile YAML file")
    p_show.add_argument(
        "--set",
        action="append",
        metavar="PATH=VALUE",
        help="override a value, e.g. --set links.h2d.bandwidth=32GB/s (repeatable)",
    )
    add_json_flag(p_show)
    p_show.set_defaults(func=_cmd_show)
    p_validate = sub.add_parser("validate", help="check a profile file; prints OK or the one-line error (exit 1)")
    p_validate.add_argument("file", help="path to a profile YAML file")
    p_validate.set_defaults(func=_cmd_validate)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
