"""Where a worker's process lives (a local child, a tmux session): started, watched, stopped, adopted."""
