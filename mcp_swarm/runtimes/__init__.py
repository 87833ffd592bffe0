"""Ways to run a worker: one adapter per agent CLI, behind the interface in `base`."""

from mcp_swarm.runtimes.base import Outcome, OutputReader, Runtime, WorkerRequest
from mcp_swarm.runtimes.claude import ClaudeProfile, ClaudeRuntime
from mcp_swarm.runtimes.codex import CodexProfile, CodexRuntime
from mcp_swarm.runtimes.command import CommandProfile, CommandRuntime

__all__ = [
    "ClaudeProfile",
    "ClaudeRuntime",
    "CodexProfile",
    "CodexRuntime",
    "CommandProfile",
    "CommandRuntime",
    "Outcome",
    "OutputReader",
    "Runtime",
    "WorkerRequest",
]
