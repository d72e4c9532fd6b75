"""Storage backends behind :class:`gateway.state.adapter.StateAdapter`.

Only the composition root (``gateway.app``) picks a concrete adapter.
"""
