"""Weights: converters from the released sources (more formats arrive with issue 3)."""

from .convert import SOURCES, convert_state_dict

__all__ = ["SOURCES", "convert_state_dict"]
