"""Headroom: ResourceQuotas derived from each namespace's own history, changed only with sign-off."""

__version__ = "0.1.0"
