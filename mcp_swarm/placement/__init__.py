"""Where a worker's process lives (a local child, a tmux session), behind one interface (base.py):
started, watched, stopped, adopted, its log read."""
