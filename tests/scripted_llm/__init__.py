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
from .openai import (
    CallOutput,
    CustomToolCall,
    FailedResponseTurn,
    FunctionCall,
    HTTPErrorTurn,
    MessageTurn,
    ResponsesRequest,
    ResponsesTurn,
    ScriptedOpenAIServer,
    ToolCallsTurn,
    is_agent_turn,
)

__all__ = [
    "CallOutput",
    "CustomToolCall",
    "FailedResponseTurn",
    "FunctionCall",
    "HTTPErrorTurn",
    "MessageTurn",
    "RecordedRequest",
    "ResponsesRequest",
    "ResponsesTurn",
    "ScriptedAnthropicServer",
    "ScriptedOpenAIServer",
    "ScriptedTurn",
    "TextTurn",
    "ToolCall",
    "ToolCallsTurn",
    "ToolResult",
    "ToolUseTurn",
    "is_agent_turn",
    "is_main_conversation",
]
