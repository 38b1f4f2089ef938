"""Plumbing shared by the dock widgets: background work, layout, layer updates."""
