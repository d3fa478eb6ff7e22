"""The portal: server-rendered pages where people see their routes and connect upstreams."""

from bastion.portal.app import PORTAL_PATHS, Portal

__all__ = ["PORTAL_PATHS", "Portal"]
