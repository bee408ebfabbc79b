"""Identifier tokens, the prompt set of a pair, and stripping identifiers for CLIP-T."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dreamsolo.config import Prompts


@dataclass(frozen=True)
class PromptRow:
    kind: str  # composed | recontext | scene | instance | class_instance | class_scene
    prompt: str
    prompt_clean: str  # identifiers removed: what CLIP-T compares against


def instance_prompt(p: Prompts, noun: str) -> str:
    return f"a photo of {p.instance_token} {noun}"


def scene_prompt(p: Prompts, noun: str) -> str:
    return f"a photo of {p.scene_token} {noun}"


def class_prompt(noun: str) -> str:
    return f"a photo of a {noun}"


def strip_identifiers(prompt: str, p: Prompts) -> str:
    """Drop the rare tokens (as whole words) so CLIP-T scores the prompt's meaning, not the token."""
    pattern = rf"\b(?:{re.escape(p.instance_token)}|{re.escape(p.scene_token)})\b\s*"
    return re.sub(r"\s{2,}", " ", re.sub(pattern, "", prompt)).strip()


def pair_prompts(p: Prompts, scene_noun: str, instance_noun: str) -> list[PromptRow]:
    """The sample prompts of a pair: composed, recontext, each concept alone, and both class prompts."""
    inst = f"{p.instance_token} {instance_noun}"
    scene = f"{p.scene_token} {scene_noun}"
    rows = [("composed", f"a photo of {inst} in {scene}")]
    rows += [("recontext", t.format(instance=inst, scene=scene)) for t in p.recontext]
    rows += [
        ("scene", scene_prompt(p, scene_noun)),
        ("instance", instance_prompt(p, instance_noun)),
        ("class_instance", class_prompt(instance_noun)),
        ("class_scene", class_prompt(scene_noun)),
    ]
    return [PromptRow(kind, text, strip_identifiers(text, p)) for kind, text in rows]
