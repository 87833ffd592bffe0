"""Scripted LLM servers that let tests run real agent CLIs without a real model."""

from .anthropic import (
    RecordedRequest,
    ScriptedAnthropicServer,
    ScriptedTurn,
    TextTurn,
    ToolCall,
    ToolResult,
    ToolUseTurn,
    is_main_conversation,
)

__all__ = [
    "RecordedRequest",
    "ScriptedAnthropicServer",
    "ScriptedTurn",
    "TextTurn",
    "ToolCall",
    "ToolResult",
    "ToolUseTurn",
    "is_main_conversation",
]
