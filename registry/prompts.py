"""MLflow 3's prompt registry: prompts are registered models tagged ``mlflow.prompt.is_prompt``.

The official client (``mlflow.genai.register_prompt`` and friends) stores a prompt as a
registered model with the tag ``mlflow.prompt.is_prompt = "true"`` and each prompt version as a
model version carrying the same tag, its template in ``mlflow.prompt.text``. A prompt version has
no files: the client sends one of two fixed placeholder sources, which MLflow's server accepts
only for prompt versions and mlgate accepts exactly the same way. mlgate stores such a version
over the frozen area's empty root (``mlgate-frozen/empty``), so no artifact path is tied to it,
its digest is NULL and nothing is copied or hashed.

mlgate is stricter than MLflow in one place: a prompt version is only created under a prompt
(a registered model with the prompt tag). Otherwise a version with no files and no lineage could
be slipped into an ordinary model, where ``models:/`` URIs and gates expect frozen bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tracking.core.errors import InvalidParameter, ResourceAlreadyExists

PROMPT_TAG = "mlflow.prompt.is_prompt"
PROMPT_TEXT_TAG = "mlflow.prompt.text"
# The placeholder sources MLflow's own senders use for prompt versions (the client's store sends
# "prompt-template", MLflow's UI "dummy-source"); MLflow's server refuses any other.
PROMPT_SOURCE_PLACEHOLDERS = frozenset({"dummy-source", "prompt-template"})


def is_prompt_request(tags: Iterable[Any]) -> bool:
    """Whether a create request's tags mark it as a prompt version (MLflow's rule: tags collapse
    by key with the last value winning, and only a value of "true", any case, counts)."""
    value = "false"
    for tag in tags:
        if getattr(tag, "key", None) == PROMPT_TAG:
            value = str(getattr(tag, "value", "") or "")
    return value.lower() == "true"


def is_prompt_tags(tags: Mapping[str, str]) -> bool:
    """Whether stored tags (of a registered model) make it a prompt."""
    return tags.get(PROMPT_TAG, "false").lower() == "true"


def check_prompt_source(source: str | None) -> str:
    """The placeholder a prompt version was sent with, or MLflow's 400 for anything else."""
    if source not in PROMPT_SOURCE_PLACEHOLDERS:
        raise InvalidParameter(
            f"Invalid prompt source: '{source}'. Prompt sources must use an MLflow placeholder."
        )
    return source


class PromptVersionOutsidePrompt(InvalidParameter):
    """A prompt version sent to a registered model that is not a prompt."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Registered model '{name}' is not a prompt: a prompt version (tag "
            f"'{PROMPT_TAG}' = 'true') can only be created under a registered model with that tag."
        )


class NameTakenAcrossKinds(ResourceAlreadyExists):
    """A prompt created under a model's name, or a model under a prompt's (MLflow's wording)."""

    def __init__(self, name: str, new_is_prompt: bool) -> None:
        new, old = (
            ("prompt", "registered model") if new_is_prompt else ("registered model", "prompt")
        )
        super().__init__(
            f"Tried to create a {new} with name {name!r}, but the name is already taken by a "
            f"{old}. MLflow does not allow creating a model and a prompt with the same name."
        )
