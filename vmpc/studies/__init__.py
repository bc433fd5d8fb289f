"""Closed-loop studies behind ``vmpc eval ...``."""
