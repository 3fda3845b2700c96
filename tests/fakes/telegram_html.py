"""Telegram's text formatting as the Bot API applies it: HTML parse mode, trimming, UTF-16 sizes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The tags Telegram's HTML parse mode accepts; anything else is an error, not plain text.
_ENTITY_TYPE_BY_TAG = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "a": "text_link",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_SPACES = " \t\r\n\v\f"


class EntityParseError(ValueError):
    """The text is not valid Telegram HTML; the message is Telegram's wording."""


@dataclass(frozen=True)
class FormattedText:
    """Visible text plus Bot API MessageEntity dicts (offsets in UTF-16 code units)."""

    text: str
    entities: tuple[dict[str, Any], ...] = ()


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's limits and entity offsets."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def format_text(
    text: str, parse_mode: str | None, entities: Sequence[dict[str, Any]] | None
) -> FormattedText:
    """Turn a text parameter into what the chat shows; raises EntityParseError or ValueError."""
    if entities:
        # Telegram uses explicit entities and ignores parse_mode when both are given.
        formatted = FormattedText(text, tuple(dict(entity) for entity in entities))
    elif parse_mode is None or parse_mode == "":
        formatted = FormattedText(text)
    elif parse_mode.lower() == "html":
        formatted = parse_html(text)
    elif parse_mode.lower() in ("markdown", "markdownv2"):
        raise ValueError(f"the fake Telegram server does not implement parse_mode={parse_mode}")
    else:
        raise ValueError("unsupported parse_mode")
    return trim(formatted)


def trim(formatted: FormattedText) -> FormattedText:
    """Strip leading/trailing whitespace and clip entities, as Telegram does before sending."""
    stripped = formatted.text.strip()
    if stripped == formatted.text:
        return formatted
    lead = utf16_len(formatted.text[: len(formatted.text) - len(formatted.text.lstrip())])
    size = utf16_len(stripped)
    entities = []
    for entity in formatted.entities:
        start = max(0, entity["offset"] - lead)
        end = min(size, entity["offset"] + entity["length"] - lead)
        if end > start:
            entities.append({**entity, "offset": start, "length": end - start})
    return FormattedText(stripped, tuple(entities))


def parse_html(html: str) -> FormattedText:
    """Parse Telegram HTML into visible text and entities, mirroring TDLib's parser."""
    return _HtmlParser(html).parse()


@dataclass
class _OpenTag:
    name: str
    start: int  # UTF-16 offset in the visible text
    first_piece: int  # index into the parser's output pieces
    argument: str = ""
    is_expandable: bool = False


@dataclass
class _HtmlParser:
    html: str
    pos: int = 0
    out: list[str] = field(default_factory=list)
    size: int = 0  # UTF-16 units written to out
    open_tags: list[_OpenTag] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)

    def parse(self) -> FormattedText:
        html = self.html
        while self.pos < len(html):
            char = html[self.pos]
            if char == "&":
                decoded = self._decode_entity()
                if decoded is not None:
                    self._emit(decoded)
                    continue
            if char != "<":
                self._emit(char)
                self.pos += 1
                continue
            begin = self.pos
            self.pos += 1
            if self.pos < len(html) and html[self.pos] == "/":
                self._close_tag(begin)
            else:
                self._open_tag(begin)
        if self.open_tags:
            name = self.open_tags[-1].name
            raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{name}"')
        for entity in self.entities:
            if entity["type"] == "code":
                entity.pop("language", None)  # a language only survives on pre entities
        entities = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return FormattedText("".join(self.out), tuple(entities))

    def _emit(self, text: str) -> None:
        self.out.append(text)
        self.size += utf16_len(text)

    def _byte_offset(self, index: int) -> int:
        # Telegram reports positions as byte offsets into the UTF-8 request text.
        return len(self.html[:index].encode("utf-8", "surrogatepass"))

    def _char(self) -> str:
        return self.html[self.pos] if self.pos < len(self.html) else ""

    def _skip_spaces(self) -> None:
        while self._char() and self._char() in _SPACES:
            self.pos += 1

    def _decode_entity(self) -> str | None:
        """Decode &lt; &gt; &amp; &quot; or a numeric reference at pos; None leaves '&' literal."""
        html, start = self.html, self.pos
        end = start + 1
        if html[end : end + 1] == "#":
            end += 1
            is_hex = html[end : end + 1] in ("x", "X")
            end += is_hex
            digits_start = end
            valid = "0123456789abcdefABCDEF" if is_hex else "0123456789"
            while end < len(html) and html[end] in valid:
                end += 1
            digits = html[digits_start:end]
            if not digits or end - start >= 10:
                return None
            code = int(digits, 16 if is_hex else 10)
            if code == 0 or code >= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                return None
            decoded = chr(code)
        else:
            while end < len(html) and html[end].isascii() and html[end].isalpha():
                end += 1
            decoded = _NAMED_ENTITIES.get(html[start + 1 : end])
            if decoded is None:
                return None
        self.pos = end + 1 if html[end : end + 1] == ";" else end
        return decoded

    def _open_tag(self, begin: int) -> None:
        html = self.html
        name_start = self.pos
        while self._char() and self._char() not in _SPACES and self._char() != ">":
            self.pos += 1
        if not self._char():
            raise EntityParseError(f"Unclosed start tag at byte offset {self._byte_offset(begin)}")
        name = html[name_start : self.pos].lower()
        if name not in _ENTITY_TYPE_BY_TAG:
            raise EntityParseError(
                f'Unsupported start tag "{name}" at byte offset {self._byte_offset(begin)}'
            )
        tag = _OpenTag(name=name, start=self.size, first_piece=len(self.out))
        span_class = ""
        while self._char() != ">":
            self._skip_spaces()
            if not self._char():
                raise EntityParseError(
                    f"Unclosed start tag at byte offset {self._byte_offset(begin)}"
                )
            if self._char() == ">":
                break
            attribute, value = self._attribute(name, begin)
            if attribute == "expandable" and name == "blockquote":
                tag.is_expandable = True
            elif attribute == "href" and name == "a":
                tag.argument = value
            elif attribute == "class" and name == "code" and value.startswith("language-"):
                tag.argument = value.removeprefix("language-")
            elif attribute == "class" and name == "span":
                span_class = value
        self.pos += 1
        if name == "span" and span_class != "tg-spoiler":
            raise EntityParseError(
                f'Tag "span" must have class "tg-spoiler" at byte offset {self._byte_offset(begin)}'
            )
        self.open_tags.append(tag)

    def _attribute(self, tag_name: str, begin: int) -> tuple[str, str]:
        """Read one attribute (name[=value]) of a start tag."""
        html = self.html
        name_start = self.pos
        while self._char() and self._char() not in _SPACES and self._char() not in "=>":
            self.pos += 1
        name = html[name_start : self.pos].lower()
        if not name:
            raise EntityParseError(
                f'Empty attribute name in the tag "{tag_name}" at byte offset '
                f"{self._byte_offset(begin)}"
            )
        self._skip_spaces()
        if self._char() != "=":
            if tag_name == "blockquote" and name == "expandable":
                return name, ""
            if not self._char():
                raise EntityParseError(
                    f"Unclosed start tag at byte offset {self._byte_offset(begin)}"
                )
            raise EntityParseError(
                f'Expected equal sign in declaration of an attribute of the tag "{tag_name}" '
                f"at byte offset {self._byte_offset(begin)}"
            )
        self.pos += 1
        self._skip_spaces()
        quote = self._char()
        if not quote:
            raise EntityParseError(f"Unclosed start tag at byte offset {self._byte_offset(begin)}")
        if quote in "'\"":
            self.pos += 1
            value: list[str] = []
            while self._char() and self._char() != quote:
                if self._char() == "&":
                    decoded = self._decode_entity()
                    if decoded is not None:
                        value.append(decoded)
                        continue
                value.append(self._char())
                self.pos += 1
            if self._char() == quote:
                self.pos += 1
            text = "".join(value)
        else:
            value_start = self.pos
            while self._char() and (self._char().isalnum() or self._char() in ".-"):
                self.pos += 1
            text = html[value_start : self.pos].lower()
            if self._char() and self._char() not in _SPACES and self._char() != ">":
                raise EntityParseError(
                    f"Unexpected end of name token at byte offset {self._byte_offset(self.pos)}"
                )
        if not self._char():
            raise EntityParseError(f"Unclosed start tag at byte offset {self._byte_offset(begin)}")
        return name, text

    def _close_tag(self, begin: int) -> None:
        html = self.html
        if not self.open_tags:
            raise EntityParseError(f"Unexpected end tag at byte offset {self._byte_offset(begin)}")
        self.pos += 1  # the '/'
        name_start = self.pos
        while self._char() and self._char() not in _SPACES and self._char() != ">":
            self.pos += 1
        end_name = html[name_start : self.pos].lower()
        self._skip_spaces()
        if self._char() != ">":
            raise EntityParseError(f"Unclosed end tag at byte offset {self._byte_offset(begin)}")
        self.pos += 1
        tag = self.open_tags.pop()
        if end_name and end_name != tag.name:
            raise EntityParseError(
                f"Unmatched end tag at byte offset {self._byte_offset(begin)}, "
                f'expected "</{tag.name}>", found "</{end_name}>"'
            )
        self._add_entity(tag)

    def _add_entity(self, tag: _OpenTag) -> None:
        length = self.size - tag.start
        if length <= 0:
            return  # Telegram drops empty entities silently
        entity: dict[str, Any] = {
            "type": _ENTITY_TYPE_BY_TAG[tag.name],
            "offset": tag.start,
            "length": length,
        }
        if tag.name == "a":
            entity["url"] = tag.argument or "".join(self.out[tag.first_piece :])
        elif tag.name == "blockquote" and tag.is_expandable:
            entity["type"] = "expandable_blockquote"
        elif tag.name == "pre" and self.entities:
            # <pre><code class="language-x">...</code></pre> becomes one pre entity with a language.
            inner = self.entities[-1]
            is_same_range = (inner["offset"], inner["length"]) == (tag.start, length)
            if inner["type"] == "code" and is_same_range and inner.get("language"):
                self.entities.pop()
                entity["language"] = inner["language"]
        elif tag.name == "code" and tag.argument:
            entity["language"] = tag.argument
        self.entities.append(entity)
