"""Which planner agent answers a message: the session type, then keywords, then (when unsure) the model.

Keyword rules first (seed 000's router): cheap, predictable and testable; the model is asked only when no
rule wins or two tie. Global sessions always go to the global agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from protocol.planner import AgentName

if TYPE_CHECKING:
    from protocol.planner import PlannerReplyInput

__all__ = ("KEYWORDS", "Route", "keyword_route")

RoutedBy = Literal["keywords", "model", "session"]
Route = tuple[AgentName, RoutedBy]

KEYWORDS: dict[AgentName, tuple[str, ...]] = {
    "summarizer": (
        "总结",
        "概括",
        "汇总",
        "进展如何",
        "进度",
        "overview",
        "summary",
        "summarize",
        "summarise",
        "status",
    ),
    "planner": (
        "重排",
        "重新规划",
        "重新安排",
        "调整计划",
        "推迟",
        "延期",
        "截止",
        "拆分",
        "加一步",
        "删掉",
        "reschedule",
        "re-plan",
        "replan",
        "reorder",
        "postpone",
        "deadline",
        "add a step",
        "remove the step",
        "split",
    ),
    "executor": (
        "完成了",
        "做完",
        "已完成",
        "开始做",
        "卡住",
        "阻塞",
        "下一步",
        "done with",
        "finished",
        "completed",
        "started",
        "blocked",
        "stuck",
        "next step",
        "what should i do",
    ),
}
"""Lower-case phrases that point at one agent (Chinese and English)."""


def keyword_route(message: PlannerReplyInput) -> Route | None:
    """The agent the rules pick, or None when no rule wins (no phrase, or a tie)."""
    if message.session_type == "global":
        return ("global", "session")
    text = message.content.lower()
    hits = {agent: sum(phrase in text for phrase in phrases) for agent, phrases in KEYWORDS.items()}
    best = max(hits.values())
    winners = [agent for agent, count in hits.items() if count == best]
    if best == 0 or len(winners) != 1:
        return None
    return (winners[0], "keywords")
