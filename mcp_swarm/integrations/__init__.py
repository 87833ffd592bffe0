"""Waves from elsewhere: OL hero hunts and beads."""
