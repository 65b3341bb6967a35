"""Geometry: rigid transforms, camera models and crop warps, the UmeTrack and MANO hand models."""
