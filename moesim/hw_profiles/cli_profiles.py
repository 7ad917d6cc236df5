"""`moesim profiles list|show|validate`: hardware profiles with units and provenance."""

from __future__ import annotations

import argparse
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.hw_profiles.loader import list_profiles, load_profile, profile_from_yaml, profile_values
from moesim.hw_profiles.profile import HardwareProfile
from moesim.units import format_bytes, format_quantity

KIND_OF_UNIT = {"B": "bytes", "B/s": "bandwidth", "s": "time", "FLOP/s": "flops", "W": "power", "J/B": "energy_per_byte"}


def profile_summary(profile: HardwareProfile) -> dict[str, Any]:
    """One row of `profiles list`: the figures that decide offload behaviour."""
    host = profile.host_link()
    ssd = profile.ssd_link()
    return {
        "name": profile.name,
        "description": profile.description,
        "cache_tier_usable_bytes": profile.tiers["vram"].usable,
        "memory_bandwidth": profile.compute.memory_bandwidth,
        "host_link": None if host is None else {"name": host.name, "bandwidth": host.bandwidth},
        "ssd_link": None if ssd is None else {"name": ssd.name, "bandwidth": ssd.bandwidth},
        "tiers": list(profile.tiers),
    }


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


def _render_show(data: dict[str, Any]) -> str:
    lines = [f"{data['name']}: {data['description']}", f"  host_memory: {data['host_memory']}"]

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict) and "unit" in value:
                kind = KIND_OF_UNIT.get(value["unit"])
                shown = format_quantity(value["value"], kind) if kind else str(value["value"])
                lines.append(f"  {path:34s} {shown:>14s}   {value['provenance']}")
            elif isinstance(value, dict):
                walk(value, path)

    walk({k: v for k, v in data.items() if isinstance(v, dict)}, "")
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    emit(args, [profile_summary(load_profile(name)) for name in list_profiles()], _render_list)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    emit(args, profile_values(load_profile(args.profile, args.set or ())), _render_show)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    profile = profile_from_yaml(args.file)  # a UserError here prints the one-line reason, exit 1
    print(f"OK: {args.file} ({profile.name})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("profiles", help="list, show and validate hardware profiles")
    sub = parser.add_subparsers(dest="profiles_command", metavar="SUBCOMMAND", parser_class=type(parser))
    p_list = sub.add_parser("list", help="the shipped hardware profiles")
    add_json_flag(p_list)
    p_list.set_defaults(func=_cmd_list)
    p_show = sub.add_parser("show", help="every value in SI units with its provenance")
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
