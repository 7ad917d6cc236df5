"""`moesim policies list|show`: what policies exist and what their parameters mean (from the registry)."""

from __future__ import annotations

import argparse
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.errors import UserError
from moesim.policies.registry import KINDS, available, describe


def _first_line(doc: str) -> str:
    return doc.strip().splitlines()[0] if doc.strip() else ""


def list_policies(kind: str | None) -> list[dict[str, Any]]:
    out = []
    for entry in available(kind):
        d = describe(entry)
        out.append({"name": d["name"], "kind": d["kind"], "alias_of": d["alias_of"], "offline": d["offline"],
                    "summary": _first_line(d["doc"]), "params": [p["name"] for p in d["params"]]})
    return out


def _render_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no policies registered"
    width = max(len(r["name"]) for r in rows)
    lines = []
    for r in rows:
        tags = []
        if r["alias_of"]:
            tags.append(f"= {r['alias_of']}")
        if r["offline"]:
            tags.append("offline")
        tag = f" [{', '.join(tags)}]" if tags else ""
        params = f" ({', '.join(r['params'])})" if r["params"] else ""
        lines.append(f"{r['kind']:9s} {r['name']:{width}s}  {r['summary']}{tag}{params}")
    return "\n".join(lines)


def show_policy(name: str, kind: str | None) -> dict[str, Any]:
    matches = [e for e in available(kind) if e.name == name]
    if not matches:
        known = ", ".join(sorted({e.name for e in available(kind)}))
        raise UserError(f"unknown policy {name!r}; known: {known}", "policy")
    if len(matches) > 1:
        kinds = ", ".join(e.kind for e in matches)
        raise UserError(f"{name!r} names policies of several kinds ({kinds}); add --kind", "policy")
    return describe(matches[0])


def _render_show(d: dict[str, Any]) -> str:
    lines = [f"{d['name']} ({d['kind']} policy{', offline: reads the future' if d['offline'] else ''})"]
    if d["alias_of"]:
        fixed = ", ".join(f"{k}={v}" for k, v in d["fixed"].items())
        lines.append(f"alias of {d['alias_of']} with {fixed}")
    if d.get("compiled"):
        lines.append("compiled: the fast engine runs it (where it takes every parameter given)")
    lines.append("")
    lines.append(d["doc"])
    lines.append("")
    if d["params"]:
        lines.append("parameters (spec syntax NAME:key=value:key=value):")
        for p in d["params"]:
            lines.append(f"  {p['name']} ({p['type']}, default {p['default']}): {p['help']}")
    else:
        lines.append("no parameters")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("policies", help="list the registered policies or show one's parameters")
    sub = parser.add_subparsers(dest="policies_command", metavar="SUBCOMMAND", parser_class=type(parser))
    p_list = sub.add_parser("list", help="list policies")
    p_list.add_argument("--kind", choices=KINDS, default=None)
    add_json_flag(p_list)
    p_list.set_defaults(func=lambda args: emit(args, list_policies(args.kind), _render_list))
    p_show = sub.add_parser("show", help="a policy's description and parameters")
    p_show.add_argument("name")
    p_show.add_argument("--kind", choices=KINDS, default=None)
    add_json_flag(p_show)
    p_show.set_defaults(func=lambda args: emit(args, show_policy(args.name, args.kind), _render_show))
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
