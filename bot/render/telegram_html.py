"""Markdown -> Telegram HTML (the subset Telegram parses), and its visible length."""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterable

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.render.split import fence_language, utf16_length

_TAG = re.compile(r"<[^>]*>")
_SAFE_HREF = re.compile(r"(?i)(https?://|tg://)\S+")


# ---------------------------------------------------------------------------------------------
# Markdown -> Telegram HTML


@functools.lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # commonmark + strikethrough + tables; raw HTML off so the model's "<b>" is shown as text.
    return MarkdownIt("commonmark", {"html": False}).enable(["strikethrough", "table"])


def escape_html(text: str) -> str:
    """Escape &, < and > for Telegram's HTML parse mode."""
    return html.escape(text, quote=False)


def markdown_to_telegram_html(text: str, *, quoted: bool = False) -> str:
    """The model's Markdown as Telegram HTML; any prefix of a Markdown text gives balanced tags.

    `quoted`: the result goes inside a blockquote, so nested quotes are flattened (Telegram
    forbids nesting them).
    """
    tree = SyntaxTreeNode(_parser().parse(text))
    rendered = _TelegramHtml(in_quote=quoted).blocks(tree.children, tight=False)
    return rendered.strip("\n")


def telegram_visible_length(html_text: str) -> int:
    """How long Telegram counts a message after entity parsing (UTF-16 code units)."""
    return utf16_length(html.unescape(_TAG.sub("", html_text)))


class _TelegramHtml:
    """Renders a markdown-it syntax tree with the tags Telegram accepts."""

    def __init__(self, *, in_quote: bool) -> None:
        self._in_quote = in_quote

    # Blocks ---------------------------------------------------------------------------------

    def blocks(self, nodes: Iterable[SyntaxTreeNode], *, tight: bool, depth: int = 0) -> str:
        out: list[str] = []
        for node in nodes:
            rendered = self.block(node, depth)
            if not rendered:
                continue
            if out:
                out.append("\n" if tight else "\n\n")
            out.append(rendered)
        return "".join(out)

    def block(self, node: SyntaxTreeNode, depth: int) -> str:
        kind = node.type
        if kind == "paragraph":
            return self.inline_children(node, frozenset())
        if kind == "heading":
            return f"<b>{self.inline_children(node, frozenset({'b'}))}</b>"
        if kind in ("bullet_list", "ordered_list"):
            return self.list(node, depth)
        if kind == "blockquote":
            return self.quote(node)
        if kind in ("fence", "code_block"):
            return self.pre(node.content, fence_language(node.info) if kind == "fence" else "")
        if kind == "hr":
            return "———"
        if kind == "table":
            return self.table(node)
        return escape_html(node.content)

    def list(self, node: SyntaxTreeNode, depth: int) -> str:
        is_ordered = node.type == "ordered_list"
        first = int(node.attrs.get("start", 1)) if is_ordered else 1
        lines = []
        for number, item in enumerate(node.children, start=first):
            bullet = f"{number}." if is_ordered else "•"
            body = self.blocks(item.children, tight=True, depth=depth + 1)
            lines.append(f"{'  ' * depth}{bullet} {body}".rstrip())
        return "\n".join(lines)

    def quote(self, node: SyntaxTreeNode) -> str:
        if self._in_quote:  # Telegram cannot nest blockquotes
            return self.blocks(node.children, tight=False)
        self._in_quote = True
        try:
            inner = self.blocks(node.children, tight=False)
        finally:
            self._in_quote = False
        return f"<blockquote>{inner}</blockquote>" if inner else ""

    @staticmethod
    def pre(code: str, lang: str) -> str:
        code = escape_html(code.removesuffix("\n"))
        if not code:
            return ""
        if lang:
            return f'<pre><code class="language-{escape_html(lang)}">{code}</code></pre>'
        return f"<pre>{code}</pre>"

    def table(self, node: SyntaxTreeNode) -> str:
        rows = [
            [_plain(cell) for cell in row.children]
            for section in node.children
            for row in section.children
        ]
        if not rows:
            return ""
        num_cols = max(len(row) for row in rows)
        widths = [max((len(r[c]) for r in rows if c < len(r)), default=0) for c in range(num_cols)]
        lines = [
            " | ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip() for row in rows
        ]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return self.pre("\n".join(lines), "")

    # Inline ---------------------------------------------------------------------------------

    def inline_children(self, node: SyntaxTreeNode, open_tags: frozenset[str]) -> str:
        return "".join(self.span(child, open_tags) for child in node.children)

    def span(self, node: SyntaxTreeNode, open_tags: frozenset[str]) -> str:
        kind = node.type
        if kind in ("text", "text_special", "html_inline"):
            return escape_html(node.content)
        if kind in ("softbreak", "hardbreak"):
            return "\n"
        if kind == "code_inline":
            return f"<code>{escape_html(node.content)}</code>"
        if kind == "inline":
            return self.inline_children(node, open_tags)
        tag = {"strong": "b", "em": "i", "s": "s"}.get(kind)
        if tag is not None:
            inner = self.inline_children(node, open_tags | {tag})
            return inner if tag in open_tags else f"<{tag}>{inner}</{tag}>"
        if kind in ("link", "image"):
            target = str(node.attrs.get("href" if kind == "link" else "src", ""))
            inner = self.inline_children(node, open_tags | {"a"})
            if not inner:
                inner = escape_html(target)
            if "a" in open_tags or not _SAFE_HREF.fullmatch(target):
                return inner
            return f'<a href="{html.escape(target, quote=True)}">{inner}</a>'
        return escape_html(node.content) + self.inline_children(node, open_tags)


def _plain(node: SyntaxTreeNode) -> str:
    """The text of an inline subtree without markup (for table cells)."""
    if node.type in ("softbreak", "hardbreak"):
        return " "
    if node.type in ("text", "text_special", "code_inline", "html_inline"):
        return node.content
    return "".join(_plain(child) for child in node.children)
