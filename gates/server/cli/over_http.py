"""What the CLI's HTTP clients share: the caller's own credentials and the server's answer."""

from __future__ import annotations

from typing import Any

from tracking.core.settings import Settings


def caller_credentials(settings: Settings) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Headers and basic auth from MLFLOW_TRACKING_TOKEN, or the user name and password."""
    if settings.tracking_token:
        return {"Authorization": f"Bearer {settings.tracking_token}"}, None
    if settings.tracking_username:
        return {}, (settings.tracking_username, settings.tracking_password)
    return {}, None


def json_answer(response: Any) -> dict[str, Any]:
    """The server's answer as a dict: its JSON object, else its text as the message."""
    try:
        answer = response.json()
    except ValueError:
        return {"message": response.text}
    return answer if isinstance(answer, dict) else {"message": str(answer)}


def error_line(status_code: int, answer: dict[str, Any]) -> str:
    return f"mlgate: {status_code} {answer.get('error_code', '')}: {answer.get('message', '')}"
