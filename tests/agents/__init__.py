"""The real Claude Code and Codex CLIs, driven against scripted model servers."""
