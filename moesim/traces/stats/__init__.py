"""Trace statistics: how concentrated, how repetitive and how large a routing trace is."""
