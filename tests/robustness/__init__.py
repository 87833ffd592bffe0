"""Robustness across the layers: workers under stress, host limits, load, concurrent servers and
recovery after a kill."""
