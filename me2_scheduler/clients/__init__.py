"""Clients of the downstream Action and Diary services, and endpoint resolution."""

from me2_scheduler.clients.action import ActionClient, ActionResult
from me2_scheduler.clients.channels import resolve_target
from me2_scheduler.clients.diary import DiaryClient

__all__ = ["ActionClient", "ActionResult", "DiaryClient", "resolve_target"]
