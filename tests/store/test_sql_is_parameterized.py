"""Every SQL statement in bot/store is a constant: values go in as parameters, never as text.

An AST scan of every call that runs SQL. Its SQL argument must be a string literal, a
module-level constant built only from literals and other such constants (with +), a parameter
of a function that itself runs SQL (whose callers are checked in turn), or an f-string whose
every value is formatted as an integer (`{n:d}`, which cannot carry text).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bot.store

STORE = Path(bot.store.__file__).parent

# The calls that run their first argument as SQL; functions that pass one of their own
# parameters on to such a call are found by the scan and checked in the same way.
SQL_CALLS = {"execute", "executemany", "executescript", "execute_fetchall", "execute_insert"}
# Names whose value is not a constant but is known to be: (file, name) -> why.
VETTED = {
    ("migrations.py", "statement"): "the statements of the constant MIGRATIONS scripts",
}


def _constant_names(tree: ast.Module, imported: dict[str, set[str]]) -> set[str]:
    """Module-level names bound once to an expression built only from literals (and +)."""
    assigned: dict[str, list[ast.expr]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                assigned.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            assigned.setdefault(node.target.id, []).append(node.value)
    constants = {name for names in imported.values() for name in names}
    changed = True
    while changed:  # a constant may be built from constants defined above it
        changed = False
        for name, values in assigned.items():
            if name not in constants and len(values) == 1 and _is_static(values[0], constants):
                constants.add(name)
                changed = True
    return constants


def _is_static(node: ast.expr, constants: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_static(node.left, constants) and _is_static(node.right, constants)
    return False


def _is_integer_fstring(node: ast.expr) -> bool:
    if not isinstance(node, ast.JoinedStr):
        return False
    for value in node.values:
        if isinstance(value, ast.FormattedValue):
            spec = value.format_spec
            if not (
                isinstance(spec, ast.JoinedStr)
                and len(spec.values) == 1
                and isinstance(spec.values[0], ast.Constant)
                and spec.values[0].value == "d"
                and value.conversion == -1
            ):
                return False
    return True


def _store_constants(module: str) -> set[str]:
    """The constants of another bot.store module (`from bot.store.x import NAME`)."""
    path = STORE / f"{module}.py"
    if not path.exists():
        return set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return _constant_names(tree, {})


def _callee(call: ast.Call) -> str | None:
    return getattr(call.func, "attr", None) or getattr(call.func, "id", None)


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    names = [a.arg for a in function.args.args]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def sql_helpers(trees: list[ast.Module]) -> dict[str, int]:
    """Callee name -> position of its SQL argument, for SQL_CALLS and every helper around them."""
    helpers = dict.fromkeys(SQL_CALLS, 0)
    changed = True
    while changed:
        changed = False
        for function in (f for tree in trees for f in _functions(tree)):
            parameters = _parameters(function)
            for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
                position = helpers.get(_callee(call) or "")
                if position is None or len(call.args) <= position:
                    continue
                sql = call.args[position]
                if (
                    isinstance(sql, ast.Name)
                    and sql.id in parameters
                    and function.name not in helpers
                ):
                    helpers[function.name] = parameters.index(sql.id)
                    changed = True
    return helpers


def unsafe_sql_calls(
    source: str, filename: str = "<source>", helpers: dict[str, int] | None = None
) -> list[str]:
    """'file:line: code' for every SQL call whose SQL is not provably constant."""
    tree = ast.parse(source)
    helpers = helpers if helpers is not None else sql_helpers([tree])
    imported: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bot.store."):
            module = node.module.removeprefix("bot.store.")
            exported = _store_constants(module)
            imported[module] = {a.asname or a.name for a in node.names if a.name in exported}
    constants = _constant_names(tree, imported)
    problems: list[str] = []
    for function in [None, *_functions(tree)]:
        scope = tree if function is None else function
        for call in _direct_calls(scope):
            name = _callee(call)
            if name in helpers:
                problem = _check(call, name, helpers, function, constants, filename)
                if problem:
                    problems.append(problem)
    return problems


def _direct_calls(scope: ast.AST) -> list[ast.Call]:
    """Calls in `scope` but not inside a function nested in it."""
    calls: list[ast.Call] = []
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            calls.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return calls


def _check(
    call: ast.Call,
    name: str,
    helpers: dict[str, int],
    function: ast.FunctionDef | ast.AsyncFunctionDef | None,
    constants: set[str],
    filename: str,
) -> str | None:
    position = helpers[name]
    if len(call.args) <= position:
        return f"{filename}:{call.lineno}: {name}() without its SQL as a positional argument"
    sql = call.args[position]
    if function is not None:  # a local variable hides a module constant of the same name
        constants = constants - {
            n.id
            for n in ast.walk(function)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
    if _is_static(sql, constants) or _is_integer_fstring(sql):
        return None
    if isinstance(sql, ast.Name):
        if (Path(filename).name, sql.id) in VETTED:
            return None
        if function is not None and function.name in helpers and sql.id in _parameters(function):
            return None  # a SQL-running helper passing its own parameter on
    return f"{filename}:{call.lineno}: {ast.unparse(sql)}"


def test_every_sql_statement_in_the_store_is_a_constant() -> None:
    files = sorted(STORE.glob("*.py"))
    assert {f.name for f in files} >= {"sqlite.py", "migrations.py", "replies.py"}
    sources = {path: path.read_text(encoding="utf-8") for path in files}
    helpers = sql_helpers([ast.parse(source) for source in sources.values()])
    assert {"read", "_changes"} <= set(helpers)  # the store's own helpers were found
    problems: list[str] = []
    for path, source in sources.items():
        name = str(path.relative_to(STORE.parent.parent))
        problems += unsafe_sql_calls(source, name, helpers)
    assert problems == []


def test_the_scan_flags_the_store_as_it_was_before_it_was_fixed() -> None:
    """query_messages used to build its WHERE clause with f-strings (safely, but unprovably)."""
    source = (
        'COLUMNS = "m.id FROM messages AS m"\n'
        "class Store:\n"
        "    async def _read(self, sql, params):\n"
        "        return await self._conn.execute_fetchall(sql, params)\n"
        "    async def query(self, where, params):\n"
        '        return await self._read(f"SELECT {COLUMNS}{where} ORDER BY m.id", params)\n'
        "    async def history(self, key):\n"
        '        return await self._read("SELECT " + COLUMNS + " WHERE k = ?", (key,))\n'
    )
    [problem] = unsafe_sql_calls(source)
    assert ":6: f'SELECT {COLUMNS}{where} ORDER BY m.id'" in problem


@pytest.mark.parametrize(
    "code",
    [
        "conn.execute(f\"SELECT * FROM messages WHERE content = '{text}'\")",
        'conn.execute("SELECT * FROM messages WHERE id = %s" % message_id)',
        'conn.execute("SELECT * FROM t WHERE x = {}".format(x))',
        'conn.execute("SELECT * FROM t WHERE x = " + x)',
        "conn.execute_fetchall(QUERY + where)",
        'conn.execute(f"PRAGMA user_version = {version!r:d}")',
        'conn.executemany(f"UPDATE t SET x = {x}", rows)',
        'self._db.read(" AND ".join(conditions), params)',
        'QUERY = f"SELECT {x}"; conn.execute(QUERY)',
        '_changes(conn, f"DELETE FROM t WHERE a = {a}", ())',
    ],
)
def test_the_scan_catches_sql_built_from_values(code: str) -> None:
    source = f'QUERY = "SELECT 1"\n\n\nasync def f(conn, self, text, x, where):\n    {code}\n'
    helpers = sql_helpers([]) | {"read": 0, "_changes": 1}  # as found in the store
    assert len(unsafe_sql_calls(source, helpers=helpers)) == 1


def test_the_scan_accepts_constants_and_integer_formatting() -> None:
    source = (
        'BASE = "SELECT * FROM messages"\n'
        'BY_ID = BASE + " WHERE id = ?"\n'
        "async def f(conn, n):\n"
        "    await conn.execute(BY_ID, (n,))\n"
        '    await conn.execute("SELECT ?" " + 1", (n,))\n'
        '    await conn.execute(f"PRAGMA user_version = {n:d}")\n'
        "async def _changes(conn, sql, params):\n"
        "    await conn.execute(sql, params)\n"
    )
    assert unsafe_sql_calls(source) == []
