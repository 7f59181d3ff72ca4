"""Text tokenizers loaded from a checkpoint directory, with the checkpoint's chat template when it has one.

``tokenizer.json`` is read with the ``tokenizers`` library (no transformers import); the chat template
comes from ``tokenizer_config.json`` (or ``chat_template.jinja``) and is rendered with Jinja2, as
transformers does.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any


class TextTokenizer:
    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"{path} has no tokenizer.json; the model directory needs one")
        self.path = path
        self._tok = Tokenizer.from_file(str(file))
        cfg_file = path / "tokenizer_config.json"
        self.config: dict[str, Any] = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        tmpl_file = path / "chat_template.jinja"
        self.chat_template: str | None = (
            tmpl_file.read_text() if tmpl_file.is_file() else self.config.get("chat_template")
        )
        self.eos_id = self._special_id("eos_token")
        self.pad_id = self._special_id("pad_token")
        self.mask_id = self._special_id("mask_token")

    def _special_id(self, key: str) -> int | None:
        tok = self.config.get(key)
        if isinstance(tok, dict):
            tok = tok.get("content")
        return None if tok is None else self._tok.token_to_id(tok)

    def token_id(self, token: str) -> int:
        """Id of a token of the vocabulary (e.g. a special token); clear error when the tokenizer lacks it."""
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"tokenizer at {self.path} lacks the token {token!r}")
        return i

    def id_to_token(self, token_id: int) -> str:
        tok = self._tok.id_to_token(token_id)
        if tok is None:
            raise ValueError(f"tokenizer at {self.path} has no token id {token_id}")
        return tok

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    @cached_property
    def _template(self):
        """The chat template compiled once (compiling it costs more than a forward of a small model)."""
        if self.chat_template is None:
            raise ValueError(f"tokenizer at {self.path} has no chat template")
        import jinja2

        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        return env.from_string(self.chat_template)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        specials = {k: v for k, v in self.config.items() if k.endswith("_token") and isinstance(v, str)}
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **specials)

    def format_prompt(self, text: str, use_chat_template: bool = True) -> str:
        if use_chat_template and self.chat_template is not None:
            return self.apply_chat_template([{"role": "user", "content": text}])
        return text


def cut_at_eos(ids: list[int], eos_id: int | None) -> list[int]:
    """The tokens before the first EOS (all of them when there is none or no EOS id)."""
    return ids[: ids.index(eos_id)] if eos_id is not None and eos_id in ids else ids


SPECIAL_TOKENS = ["<|pad|>", "<|eos|>", "<|mask|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_bpe(texts: list[str], vocab_size: int, out_dir: str | Path, extra_special: tuple[str, ...] = ()
              ) -> TextTokenizer:
    """Train the reference model's byte-level BPE. Digits are split one per token so that arithmetic
    is learnable at this size (as in LLaMA's tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + list(extra_special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "pad_token": "<|pad|>",
                "eos_token": "<|eos|>",
                "mask_token": "<|mask|>",
                "chat_template": CHAT_TEMPLATE,
                "model_max_length": 512,
            },
            indent=2,
        )
        + "\n"
    )
    return TextTokenizer(out)
