"""Git worktrees for workers, and merging what they changed into the main tree."""
