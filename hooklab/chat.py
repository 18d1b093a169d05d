"""Chat-formatted prompts: conversations rendered with the tokenizer's chat template.

``hooklab.attribute(model, messages=[{"role": "user", "content": "..."}])`` renders each
conversation with ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)``, so
the prompt ends where the assistant's answer starts, and tokenises the text as Hugging Face
does (``add_special_tokens=False``: the template writes its own BOS where the model has one;
its markers, such as ``<|im_start|>``, are single tokens). The result is one token id list per
conversation, used as given, as a prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hooklab.inputs import bos_token_id, encode_text, own_tokenizer, resolve_prepend_bos

Conversation = Sequence[Mapping[str, str]]


def as_conversations(messages: Conversation | Sequence[Conversation]) -> list[list[dict]]:
    """Return one conversation (a list of ``{"role", "content"}`` dicts) or a list of them as
    a non-empty list of conversations; TypeError for anything else."""
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence) or not messages:
        raise TypeError(
            "messages must be a conversation, a list of {'role': ..., 'content': ...} dicts "
            f"(or a list of conversations), got {type(messages).__name__}: {messages!r}."
        )
    conversations = [messages] if isinstance(messages[0], Mapping) else list(messages)
    for k, conv in enumerate(conversations):
        bad = [m for m in conv if not isinstance(m, Mapping) or not {"role", "content"} <= set(m)]
        if isinstance(conv, (str, Mapping)) or not conv or bad:
            raise TypeError(
                f"messages[{k}] must be a non-empty list of {{'role': ..., 'content': ...}} "
                f"dicts, got {conv!r}."
            )
    return [[dict(m) for m in conv] for conv in conversations]


def chat_text(model, conversation: Conversation) -> str:
    """Render one conversation with the tokenizer's chat template and the generation prompt."""
    tokenizer = own_tokenizer(model)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"The tokenizer ({type(tokenizer).__name__}) has no chat template, so messages= "
            "cannot be formatted. Load an instruction-tuned model's tokenizer, set one "
            "(tokenizer.chat_template = '...', then hooklab.load(..., tokenizer=tokenizer)), or "
            "pass the formatted text as prompts."
        )
    return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def chat_prompt_ids(
    model, messages: Conversation | Sequence[Conversation], *, prepend_bos: bool | None = None
) -> list[list[int]]:
    """Token ids of each conversation's chat prompt (see the module docstring).

    Args:
        messages: one conversation or a list of conversations.
        prepend_bos: True prepends BOS where the template did not write it; None or False
            keep the template's text as it is.
    """
    prompts = []
    for conv in as_conversations(messages):
        ids = encode_text(model, chat_text(model, conv), what="Chat prompt")
        bos = bos_token_id(model)
        if prepend_bos and resolve_prepend_bos(model, prepend_bos) and ids[0] != bos:
            ids = [bos, *ids]
        prompts.append(ids)
    return prompts
