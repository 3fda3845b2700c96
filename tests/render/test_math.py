"""LaTeX math in Markdown -> readable Unicode, safe for the Telegram and Discord conversions."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.render.math import render_math
from bot.render.telegram_html import markdown_to_telegram_html
from tests.fakes.telegram_html import parse_html
from tests.render.helpers import assert_telegram_html
from tests.render.math_corpus import CODE, CORPUS, PRICES

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _visible(markdown: str) -> str:
    """What a Telegram user sees for `markdown` after math conversion."""
    html = markdown_to_telegram_html(render_math(markdown))
    assert_telegram_html(html)
    return parse_html(html).text


def _bold_texts(markdown: str) -> list[str]:
    formatted = parse_html(markdown_to_telegram_html(render_math(markdown)))
    utf16 = formatted.text.encode("utf-16-le")
    return [
        utf16[2 * e["offset"] : 2 * (e["offset"] + e["length"])].decode("utf-16-le")
        for e in formatted.entities
        if e["type"] == "bold"
    ]


# -- formulas ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (r"\( \frac{1}{2} \)", "½"),
        (r"\( \dfrac{3}{4} \)", "¾"),
        (r"\( \frac{a+b}{c} \)", r"(a+b)/c"),
        (r"\( \frac{1}{2x} \)", "1/(2x)"),
        (r"\( \frac{n(n+1)}{2} \)", "n(n+1)/2"),
        (r"\( \frac{3}{7} \)", "3/7"),
        (r"\( x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a} \)", "x = (-b ± √(b² - 4ac))/(2a)"),
        (r"\( \sqrt{2} \)", "√2"),
        (r"\( \sqrt[3]{27} = 3 \)", "∛27 = 3"),
        (r"\( x^2 + y_1 = z^{n+1} - a_{ij} \)", "x² + y₁ = zⁿ⁺¹ - aᵢⱼ"),
        (r"\( e^{i\pi} + 1 = 0 \)", "e^(iπ) + 1 = 0"),
        (r"\( 10^{-5} \)", "10⁻⁵"),
        (r"\( \alpha + \beta = \Gamma \)", "α + β = Γ"),
        (r"\( 3 \cdot 4 \times 5 \)", "3 · 4 × 5"),
        (r"\( a \le b \ge c \ne d \approx e \)", "a ≤ b ≥ c ≠ d ≈ e"),
        (r"\( \pm\infty \)", "±∞"),
        (r"\( \sum_{k=1}^{n} k \)", "∑ₖ₌₁ⁿ k"),
        (r"\( \int_0^1 x^2 \, dx \)", "∫₀¹ x² dx"),
        (r"\( x \to 0 \Rightarrow y \implies z \)", "x → 0 ⇒ y ⟹ z"),
        (r"\( 5 \text{ apples} \)", "5 apples"),
        (r"\( \mathrm{d}x, \mathbf{v}, \mathbb{R} \)", "dx, 𝐯, ℝ"),
        (r"\( \left( \frac{a}{b} \right)^2 \)", "(a/b)²"),
        (r"\( a \, b \; c \quad d \)", "a b c\u2003d"),
        (r"\( \sin\theta = 90^\circ \)", "sin θ = 90°"),
        (r"\( \binom{5}{2} \)", "C(5, 2)"),
        (r"\( x \equiv 1 \pmod{3} \)", "x ≡ 1 (mod 3)"),
        (r"\( B = \begin{bmatrix} 0 & 1 \\ 1 & 0 \end{bmatrix} \)", r"B = \[0, 1; 1, 0\]"),
        (r"\( |r| < 1 \)", r"\|r\| \< 1"),
        (r"\( a * b \)", r"a \* b"),
        (r"\( x_b + y_b \)", r"x\_b + y\_b"),
    ],
)
def test_inline_formula(source: str, expected: str) -> None:
    assert render_math(f"So {source} here.") == f"So {expected} here."


def test_boxed_answer_on_its_own_line_is_bold() -> None:
    assert render_math(r"\[ \boxed{7} \]") == "**7**"
    assert _bold_texts(r"\[ \boxed{7} \]") == ["7"]
    assert _visible("The answer is \\(\\boxed{x = 7}\\).") == "The answer is x = 7."
    assert _bold_texts("The answer is \\(\\boxed{x = 7}\\).") == ["x = 7"]


def test_r1_final_answer_block() -> None:
    assert render_math(CORPUS["boxed_answer"]) == (
        "To solve 2x + 3 = 17, subtract 3 from both sides:\n\n2x = 14\n\n"
        "Then divide both sides by 2:\n\nx = 7\n\n**Final Answer**\n**7**"
    )
    assert _bold_texts(CORPUS["boxed_answer"]) == ["Final Answer", "7"]


def test_boxed_answer_glued_to_a_word_is_still_bold() -> None:
    assert _bold_texts(r"so x=\(\boxed{-3}\)") == ["-3"]
    assert _bold_texts(r"the pair is\(\boxed{(1, 2)}\)") == ["(1, 2)"]


def test_boxed_inside_bold_stays_one_bold_span() -> None:
    source = r"3. **The sum is \( \boxed{\frac{9}{2}} \).**"
    assert render_math(source) == "3. **The sum is 9/2.**"
    assert _bold_texts(source) == ["The sum is 9/2."]


def test_aligned_equations_become_rows() -> None:
    source = "\\[\n\\begin{aligned}\nx &= 1 + 2 \\\\\n&= 3\n\\end{aligned}\n\\]"
    assert render_math(source) == "x = 1 + 2\n\\= 3"
    assert _visible(source) == "x = 1 + 2\n= 3"


def test_cases_and_matrices_on_their_own_lines() -> None:
    cases = (
        r"\[ f(x) = \begin{cases} x^2 & \text{if } x \ge 0 \\ -x & \text{otherwise} \end{cases} \]"
    )
    assert _visible(cases) == "f(x) =\n⎧ x², if x ≥ 0\n⎩ -x, otherwise"
    matrix = r"\[ A = \begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix} \]"
    assert _visible(matrix) == "A =\n⎛1\u20032⎞\n⎝3\u20034⎠"


def test_display_math_inside_a_list_item_stays_in_the_item() -> None:
    source = "1. Step one:\n   \\[ x = \\frac{1}{2} \\]\n2. Step two: \\( y = 2 \\)"
    assert render_math(source) == "1. Step one:\n   x = ½\n2. Step two: y = 2"
    html = markdown_to_telegram_html(render_math(source))
    assert html == "1. Step one:\nx = ½\n2. Step two: y = 2"


def test_text_after_display_math_in_a_list_item_stays_in_the_item() -> None:
    source = "1. \\[ x = 1 \\] so we are done\n2. Next"
    assert render_math(source) == "1. x = 1\n   so we are done\n2. Next"
    html = markdown_to_telegram_html(render_math(source))
    assert html == "1. x = 1\nso we are done\n2. Next"


def test_display_math_in_the_middle_of_a_line_gets_its_own_line() -> None:
    assert render_math(r"so \[ x = 1 \] and we stop") == "so \nx = 1\nand we stop"
    assert render_math(r"If $$\frac{x}{2} = 1$$ then") == "If \nx/2 = 1\nthen"


def test_display_math_in_a_quote() -> None:
    assert render_math("> Note:\n> \\[\n> \\frac{1}{2}\n> \\]\n") == "> Note:\n> ½\n"


def test_lines_that_would_be_markdown_blocks_are_escaped() -> None:
    # A converted line starting with '-', '#', '+', '>' or '1.' must not become a list or heading.
    for formula, shown in [("-x", "-x"), ("+ 1", "+ 1"), ("> 0", "> 0"), (r"\# 1", "# 1")]:
        html = markdown_to_telegram_html(render_math(f"\\[ {formula} \\]"))
        assert_telegram_html(html)
        assert parse_html(html).text == shown
        assert "•" not in html and "<b>" not in html and "<blockquote>" not in html


def test_unsupported_formula_is_shown_as_its_source_in_code() -> None:
    assert render_math(CORPUS["unsupported"]) == (
        "A commutative diagram: `\\xymatrix{A \\ar[r] & B}`, which we cannot draw here."
    )
    block = "\\[\n\\begin{tikzcd}\nA \\arrow[r] & B\n\\end{tikzcd}\n\\]"
    assert render_math(block) == ("```latex\n\\begin{tikzcd}\nA \\arrow[r] & B\n\\end{tikzcd}\n```")
    assert render_math(r"\( \frac{1} \)") == r"`\frac{1}`"


def test_delimiters_that_form_no_formula_stay_visible() -> None:
    assert _visible(r"a \( b") == r"a \( b"
    assert _visible(r"a \) b \] c") == r"a \) b \] c"
    assert _visible("\\[ x\n\nnext paragraph \\]") == "\\[ x\n\nnext paragraph \\]"


# -- dollars -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "A pen costs $5 and a book $10.",
        "It costs $3.50.",
        "From $5 to $10",
        "between $5-$10 a day",
        "between $1,000 and $2,000",
        "$5/month, or $50/year",
        "($5) and ($6)",
        "echo $HOME/$USER",
        "echo $HOME and $USER",
        "the $n$th term",
        "a $ b $ c",
        "a $$ b",
        "costs $5",
        r"escaped \$x\$ stays",
        "$x\n$",
        PRICES,
    ],
)
def test_dollars_that_are_not_math_stay_as_written(text: str) -> None:
    assert render_math(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("If $x = 2$, then", "If x = 2, then"),
        ("the $n$-th term", "the n-th term"),
        ("$x^2$", "x²"),
        ("$5$", "5"),
        ("$5/month and $x$", "$5/month and x"),
        ("$a_n = 2n$.", "aₙ = 2n."),
        ("$$\\frac{1}{3}$$", "⅓"),
        ("a $$x$$ b", "a \nx\nb"),
    ],
)
def test_dollar_math(text: str, expected: str) -> None:
    assert render_math(text) == expected


# -- code --------------------------------------------------------------------------------------


def test_code_is_left_exactly_as_written() -> None:
    rendered = render_math(CODE)
    assert "`\\frac{a}{b}`" in rendered
    assert "`\\( x \\)`" in rendered
    assert "```latex\n\\[\n\\frac{1}{2} + \\sqrt{x}\n\\]\n```" in rendered
    assert "    indented: \\( \\alpha \\) and $x$ stay as they are" in rendered
    assert rendered.endswith("The rendered form is a/b.")
    visible = _visible(CODE)
    assert "\\frac{1}{2} + \\sqrt{x}" in visible and "\\( \\alpha \\)" in visible


@pytest.mark.parametrize(
    "text",
    [
        "``\\(x\\)``",
        "`$x$` and `` `\\[y\\]` ``",
        "~~~\n\\boxed{1}\n~~~",
        "- item\n\n  ```\n  $x$\n  ```",
        "> ```\n> \\(a\\)\n> ```",
        "para\n\n    \\[ x \\]\n",
    ],
)
def test_latex_in_code_is_untouched(text: str) -> None:
    assert render_math(text) == text


# -- streaming ---------------------------------------------------------------------------------


def test_unfinished_formula_is_held_back_while_streaming() -> None:
    assert render_math(r"Text before \[ \frac{1}{", is_complete=False) == "Text before "
    assert render_math("Text $x + ", is_complete=False) == "Text "
    assert render_math("costs $5", is_complete=False) == "costs "  # or "$5$"?
    assert render_math("ends with \\", is_complete=False) == "ends with "
    assert render_math("Done: \\( x \\) and", is_complete=False) == "Done: x and"


def test_unfinished_formula_at_the_end_is_shown_as_written() -> None:
    assert _visible(r"Text before \[ \frac{1}{") == r"Text before \[ \frac{1}{"
    assert _visible("costs $5") == "costs $5"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_prefix_of_a_corpus_answer_is_a_prefix_of_the_whole(name: str) -> None:
    text = CORPUS[name]
    whole = render_math(text)
    before = ""
    for end in range(len(text) + 1):
        shown = render_math(text[:end], is_complete=False)
        assert whole.startswith(shown), (end, text[:end])
        assert shown.startswith(before), (end, text[:end])
        before = shown
        if text[:end].endswith("\n\n"):  # everything before a blank line is decided
            assert shown == render_math(text[:end]), end


# -- properties --------------------------------------------------------------------------------

# Fragments that, concatenated at random, make Markdown full of math, code and edge cases.
# fmt: off
_PIECES = [
    "a", "x", "7", " ", " ", "\n", "\n\n", "\\(", "\\)", "\\[", "\\]", "$", "$$", "$5", "`",
    "```\n", "\n```\n", "**", "*", "_", "- ", "1. ", "> ", "    ", "\\frac{1}{2}", "\\boxed{",
    "}", "{", "x^2", "a_{ij}", "\\alpha", "\\weird{x}", "\\begin{aligned}", "&", "\\\\",
    "\\end{aligned}", "\\text{ if }", "|", "<", "&amp;", "#", "\\", "\\$", "=", "-", "``",
    "~~~\n", "\t", "\r", "\\left(", "\\right)", "\\[\n", "\n\\]", "$x$", "\\$5",
]
# fmt: on
_markdownish = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)
_any_text = st.one_of(st.text(max_size=200), _markdownish)


@_SETTINGS
@given(_any_text, st.booleans())
def test_never_raises_and_yields_valid_telegram_html(text: str, is_complete: bool) -> None:
    rendered = render_math(text, is_complete=is_complete)
    assert isinstance(rendered, str)
    assert_telegram_html(markdown_to_telegram_html(rendered))


_NO_MATH = st.text(
    alphabet=st.sampled_from(list("ab1 \n\t*_`~|<>&#-=.()[]{}^\\")), max_size=120
).filter(lambda t: not re.search(r"\\[()\[\]]", t))


@_SETTINGS
@given(st.one_of(st.text(max_size=200).filter(lambda t: "\\" not in t and "$" not in t), _NO_MATH))
def test_text_without_math_comes_back_unchanged(text: str) -> None:
    assert render_math(text) == text
    assert text.startswith(render_math(text, is_complete=False))


_code_content = st.lists(st.sampled_from(_PIECES), min_size=1, max_size=12).map(
    lambda parts: re.sub(r"[`~\r\n]", " ", "".join(parts)).strip() or "x"
)


@_SETTINGS
@given(st.lists(st.tuples(_markdownish, _code_content, st.booleans()), min_size=1, max_size=4))
def test_code_spans_and_blocks_come_back_unchanged(parts: list[tuple[str, str, bool]]) -> None:
    snippets = []
    text = ""
    for prose, code, is_block in parts:
        # Prose may leave a formula open (a blank line ends it), but opens no code of its own.
        snippet = f"```\n{code}\n```\n" if is_block else f"`{code}`"
        text += re.sub(r"[`~]", "", prose) + "\n\n" + snippet + "\n\n"
        snippets.append(snippet)
    rendered = render_math(text)
    for snippet in snippets:
        assert snippet in rendered


@_SETTINGS
@given(st.one_of(st.sampled_from(sorted(CORPUS.values())), st.just("")), _markdownish, st.data())
def test_streaming_output_only_grows(answer: str, extra: str, data: st.DataObject) -> None:
    text = answer + extra
    whole = render_math(text)
    cut = data.draw(st.integers(0, len(text)))
    partial = render_math(text[:cut], is_complete=False)
    assert whole.startswith(partial)
    later = data.draw(st.integers(cut, len(text)))
    assert render_math(text[:later], is_complete=False).startswith(partial)


@pytest.mark.parametrize("name", sorted(set(CORPUS) - {"code", "unsupported", "prices"}))
def test_corpus_answers_show_no_latex(name: str) -> None:
    visible = _visible(CORPUS[name])
    assert not re.search(r"\\[A-Za-z]+|\\[()\[\]]|\$\$", visible), visible
