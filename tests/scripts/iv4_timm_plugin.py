"""A pytest plugin for timm's own tests/test_models.py: registers our networks (iv4_*) first."""

import inceptionv4

inceptionv4.register_timm()
