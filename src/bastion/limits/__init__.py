"""Behavioural limits (issue 14): rates and quotas per principal, client, route and tool."""

from bastion.limits.rates import LIMIT_KEYS, RATE_UNITS, Rate, parse_rate

__all__ = ["LIMIT_KEYS", "RATE_UNITS", "Rate", "parse_rate"]
