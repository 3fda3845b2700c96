"""Answers in the style DeepSeek-R1 writes them: LaTeX math inside Markdown, prices, code."""

from __future__ import annotations

BOXED_ANSWER = r"""To solve \( 2x + 3 = 17 \), subtract 3 from both sides:

\[
2x = 14
\]

Then divide both sides by 2:

\[
x = 7
\]

**Final Answer**
\[
\boxed{7}
\]"""

FRACTIONS_AND_ROOTS = r"""The roots of \( ax^2 + bx + c = 0 \) are

\[
x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}
\]

With \( a = 1 \), \( b = -3 \), \( c = 2 \): the discriminant is \( \sqrt{9 - 8} = 1 \),
so \( x = \frac{3 \pm 1}{2} \), that is \( x = 2 \) or \( x = 1 \). Half of it is
\( \frac{1}{2} \), and \( \dfrac{3}{4} \) of a cup is left."""

ALIGNED = r"""Expanding step by step:

\[
\begin{aligned}
(a + b)^2 &= (a + b)(a + b) \\
&= a^2 + ab + ba + b^2 \\
&= a^2 + 2ab + b^2
\end{aligned}
\]

and the piecewise function is
\[
f(x) = \begin{cases} x^2 & \text{if } x \ge 0 \\ -x & \text{otherwise} \end{cases}
\]"""

LIST_AND_BOLD = r"""1. **Identify the terms:** the first term is \( a_1 = 3 \) and the ratio
   is \( r = \frac{1}{3} \).
2. **Apply the formula:** \( S = \frac{a_1}{1 - r} \), valid because \( |r| < 1 \).
   \[
   S = \frac{3}{1 - \frac{1}{3}} = \frac{9}{2}
   \]
3. **The sum is \( \boxed{\frac{9}{2}} \).**

- Angle: \( \theta = 90^\circ \), so \( \sin\theta = 1 \).
- Greek: \( \alpha + \beta = \pi \), and \( \Delta x \to 0 \)."""

SUMS_AND_INTEGRALS = r"""The sum of the first \( n \) integers:

\[
\sum_{k=1}^{n} k = \frac{n(n+1)}{2}
\]

and the area under \( y = x^2 \):

\[
\int_0^1 x^2 \, dx = \left[ \frac{x^3}{3} \right]_0^1 = \frac{1}{3}
\]

Also \( \lim_{x \to 0} \frac{\sin x}{x} = 1 \) and \( e^{i\pi} + 1 = 0 \)."""

MATRICES = r"""The matrix and its determinant:

\[
A = \begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}, \quad \det(A) = 1 \cdot 4 - 2 \cdot 3 = -2
\]

In brackets: \( B = \begin{bmatrix} 0 & 1 \\ 1 & 0 \end{bmatrix} \)."""

TEXT_IN_MATH = r"""The speed is
\( v = \frac{d}{t} = \frac{100 \text{ m}}{20 \text{ s}} = 5 \text{ m/s} \).

\[
\text{Total cost} = 3 \times \$4 = \$12
\]"""

PRICES = r"""A pen costs $3.50 and a notebook costs $5, so together they cost $8.50.

Prices range from $5 to $10, and sales between $5-$10 went up by 20%.

Set `PATH=$HOME/bin:$PATH` or echo $HOME and $USER in the shell."""

DOLLAR_MATH = r"""If $x = 2$, then $x^2 = 4$ and $$\frac{x}{2} = 1$$ follows.

The $n$-th term is $a_n = 2n$."""

CODE = r"""In LaTeX you write a fraction as `\frac{a}{b}` and inline math as `\( x \)`:

```latex
\[
\frac{1}{2} + \sqrt{x}
\]
```

    indented: \( \alpha \) and $x$ stay as they are

The rendered form is \( \frac{a}{b} \)."""

MIXED = r"""Let me check: \( 3 \times 4 = 12 \), \( 12 \div 4 = 3 \), \( 5 \ne 6 \),
\( x \le y \ge z \), \( a \approx b \), \( \pm 1 \), \( \infty \).

Since \( x > 0 \Rightarrow x^2 > 0 \) and \( A \implies B \),
we get \( \mathbb{R} \), \( \mathbf{v} \), \( \mathrm{d}x \).

\[ \boxed{x = 7} \]"""

UNSUPPORTED = (
    r"""A commutative diagram: \( \xymatrix{A \ar[r] & B} \), which we cannot draw here."""
)

CORPUS = {
    "boxed_answer": BOXED_ANSWER,
    "fractions_and_roots": FRACTIONS_AND_ROOTS,
    "aligned": ALIGNED,
    "list_and_bold": LIST_AND_BOLD,
    "sums_and_integrals": SUMS_AND_INTEGRALS,
    "matrices": MATRICES,
    "text_in_math": TEXT_IN_MATH,
    "prices": PRICES,
    "dollar_math": DOLLAR_MATH,
    "code": CODE,
    "mixed": MIXED,
    "unsupported": UNSUPPORTED,
}
