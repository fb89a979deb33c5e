"""The analyst query path: read-only SQL, scoped to one tenant, deduplicated, audited.

``guard`` accepts one SELECT (WITH, UNION, INTERSECT and EXCEPT allowed) and rewrites it so that
it cannot read anything the caller may not see, whatever it says:

- every table reference is resolved by SQL's rules: to a CTE visible where it stands (defined
  in that query or an enclosing one, before it) or to a real table. ClickHouse's scalar
  ``WITH <expr> AS name`` is not a table, so ``FROM name`` reads the real table. A real table
  must be one of the caller's tables in the configured database; it is replaced by
  ``(SELECT * FROM db.table AS __sealstream_t [FINAL] WHERE __sealstream_t.tenant = '...')``.
  CTEs are renamed (``__sealstream_cte_N``) so that ClickHouse cannot resolve a name the
  guard took for a CTE to a table, or the other way round;
- functions come from an allow-list (``ALLOWED_FUNCTIONS``, aggregates with their
  combinators): nothing that reads server state, settings, files, the network, dictionaries or
  other tables, nothing that sleeps. Names of server-state functions are refused as bare
  identifiers too, because ClickHouse calls some without parentheses (``SELECT current_user``);
- no table functions, SETTINGS, FORMAT, INTO OUTFILE, query parameters or ``x IN name``
  (which ClickHouse reads as a table).

The rewritten SQL is then parsed again and everything is checked on that tree, the text that
runs: every table in it must be one of the scoped subqueries or a renamed CTE (checked with
sqlglot's scope machinery), every call must be allowed, and regenerating it must give the
same text. What cannot be resolved with certainty is refused.

``run`` executes guarded SQL with limits on time, memory, result size and reads, ``readonly``
last. Parsing is the guard because the embedded engine has no users or row policies; with a
ClickHouse server, give the query user a read-only profile and row policies as well
(docs/sinks.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.optimizer.scope import Scope as SqlScope
from sqlglot.optimizer.scope import traverse_scope

from sinks.clickhouse.functions import (
    EXTERNAL_FUNCTIONS,
    SERVER_STATE_FUNCTIONS,
    function_allowed,
    names,
)

# table -> has a tenant column (analysts see only tables that have one)
ANALYST_TABLES = {
    "events": True,
    "events_minutely": True,
    "dead_letters": True,
    "dead_letters_minutely": True,
    "audit_decisions": True,
}
OPERATOR_TABLES = {
    **ANALYST_TABLES,
    "events_by_id": True,
    "receipts": True,
    "events_minutely_state": True,
    "dead_letters_minutely_state": True,
    "dlq_replays": False,
    "checkpoints": False,
    "schema_migrations": False,
}
# ReplacingMergeTree tables read FINAL; views and plain MergeTree tables cannot or need not be.
FINAL_TABLES = {
    "events", "events_by_id", "receipts", "checkpoints", "schema_migrations", "dlq_replays",
}  # fmt: skip

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
RESERVED_PREFIX = "__sealstream"  # names the guard writes; refused in queries
SCOPED_ALIAS = "__sealstream_t"
CTE_PREFIX = "__sealstream_cte_"


_STRUCTURE: tuple[type[exp.Expr], ...] = (
    exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery, exp.From, exp.Join,
    exp.Where, exp.PreWhere, exp.Group, exp.Having, exp.Qualify, exp.Order, exp.Ordered,
    exp.Limit, exp.Offset, exp.Fetch, exp.With, exp.CTE, exp.TableAlias, exp.Table, exp.Final,
    exp.Window, exp.WindowSpec, exp.Distinct, exp.WithFill, exp.Rollup, exp.Cube,
    exp.GroupingSets, exp.Column, exp.Identifier, exp.Star, exp.Alias, exp.Literal,
    exp.Boolean, exp.Null, exp.Paren, exp.Tuple, exp.Dot, exp.Bracket, exp.Lambda, exp.Var,
    exp.DataType, exp.DataTypeParam, exp.Interval, exp.Between, exp.In, exp.Is, exp.Not,
    exp.Neg, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.EQ, exp.NEQ,
    exp.NullSafeEQ, exp.NullSafeNEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.DPipe,
    exp.BitwiseAnd, exp.BitwiseOr, exp.BitwiseXor, exp.BitwiseNot, exp.BitwiseLeftShift,
    exp.BitwiseRightShift, exp.Like, exp.ILike, exp.Escape, exp.JSONPath, exp.JSONPathKey,
    exp.JSONPathRoot, exp.JSONPathSubscript, exp.JSONPathWildcard, exp.Filter, exp.RawString,
    exp.HexString, exp.BitString, exp.IgnoreNulls, exp.RespectNulls, exp.ColumnDef,
)  # fmt: skip
_NAMED_FUNCTIONS = (
    exp.Anonymous, exp.AnonymousAggFunc, exp.CombinedAggFunc, exp.ParameterizedAgg,
    exp.CombinedParameterizedAgg,
)  # fmt: skip
_QUERY_CLAUSES = {"settings": "SETTINGS", "format": "FORMAT", "into": "INTO", "options": "OPTION"}
_TABLE_ARGS = {"this", "db", "catalog", "alias"}
# statements that are not queries (a first word sqlglot may not know)
_STATEMENTS = names("""
    alter attach backup begin check commit create delete desc describe detach drop exchange
    exists explain grant insert kill move optimize rename replace restore revoke rollback set
    show system truncate undrop update use values watch
""")
# table functions whose names are sqlglot keywords: FROM dictionary(x) reads as a table alias
_KEYWORD_TABLE_FUNCTIONS = {"dictionary", "values", "view", "merge", "format", "file"}
# tokens that may stand before "(" in generated SQL without naming a function
_NOT_A_CALL = {
    TokenType.L_PAREN, TokenType.R_PAREN, TokenType.L_BRACKET, TokenType.COMMA,
    TokenType.DASH, TokenType.PLUS, TokenType.STAR, TokenType.SLASH, TokenType.MOD,
    TokenType.LT, TokenType.LTE, TokenType.GT, TokenType.GTE, TokenType.NOT, TokenType.EQ,
    TokenType.NEQ, TokenType.NULLSAFE_EQ, TokenType.AND, TokenType.OR, TokenType.XOR,
    TokenType.DPIPE, TokenType.CARET, TokenType.AMP, TokenType.PIPE, TokenType.TILDE,
    TokenType.ARROW, TokenType.COLON, TokenType.ALIAS, TokenType.ALL, TokenType.BETWEEN,
    TokenType.CASE, TokenType.WHEN, TokenType.THEN, TokenType.ELSE, TokenType.ESCAPE,
    TokenType.EXCEPT, TokenType.EXISTS, TokenType.FILTER, TokenType.FROM, TokenType.GROUP_BY,
    TokenType.GROUPING_SETS, TokenType.ROLLUP, TokenType.CUBE, TokenType.HAVING, TokenType.IN,
    TokenType.INTERSECT, TokenType.INTERVAL, TokenType.IS, TokenType.JOIN, TokenType.LIKE,
    TokenType.ILIKE, TokenType.LIMIT, TokenType.OFFSET, TokenType.ON, TokenType.ORDER_BY,
    TokenType.OVER, TokenType.PARTITION_BY, TokenType.PREWHERE, TokenType.QUALIFY,
    TokenType.SELECT, TokenType.UNION, TokenType.USING, TokenType.WHERE, TokenType.WINDOW,
    TokenType.WITH, TokenType.DISTINCT,
}  # fmt: skip
_TEXT_TOKENS = {
    TokenType.STRING, TokenType.NUMBER, TokenType.RAW_STRING, TokenType.HEREDOC_STRING,
    TokenType.BIT_STRING, TokenType.HEX_STRING, TokenType.BYTE_STRING,
    TokenType.NATIONAL_STRING,
}  # fmt: skip
_CLICKHOUSE = sqlglot.Dialect.get_or_raise("clickhouse")
# type names before "(" (CAST(x AS Decimal(10, 2))) are not calls; no function that reads
# state has such a name (test_query_guard checks it against the engine's functions)
TYPE_TOKENS = frozenset(_CLICKHOUSE.parser_class.TYPE_TOKENS)


class QueryRejected(ValueError):
    """A query the analyst path does not run; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Scope:
    """Who is asking: ``tenant`` None means every tenant (local operators, auditors)."""

    tenant: str | None
    tables: dict[str, bool]
    final: bool = True  # read ReplacingMergeTree tables deduplicated


def analyst(tenant: str) -> Scope:
    return Scope(tenant, ANALYST_TABLES)


def operator() -> Scope:
    """Auditors and local operators: every tenant, tables as stored (duplicates included, so
    that verification sees what is physically there; FINAL where the query says so)."""
    return Scope(None, OPERATOR_TABLES, final=False)


def guard(sql: str, scope: Scope, database: str) -> str:
    """The SQL to run for ``sql``, or QueryRejected saying why not."""
    try:
        tree = _parse(sql)
        rewritten: exp.Query = _Rewriter(scope, database).rewrite(tree)
        if isinstance(rewritten, exp.SetOperation):  # ClickHouse skips the result limits
            rewritten = exp.select(exp.Star()).from_(exp.Subquery(this=rewritten))  # of a UNION
        out = rewritten.sql(dialect="clickhouse", comments=False)
        _verify(out, scope, database)
    except RecursionError as exc:
        raise QueryRejected("query_too_complex", "the query nests too deeply") from exc
    except sqlglot.errors.SqlglotError as exc:
        raise QueryRejected("query_syntax", f"cannot parse the query: {exc}") from exc
    return out


def _parse(sql: str) -> exp.Query:
    if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in sql):
        raise QueryRejected("query_syntax", "control characters are not allowed (in strings: \\0)")
    try:
        tokens = _CLICKHOUSE.tokenize(sql)
    except sqlglot.errors.TokenError as exc:
        raise QueryRejected("query_syntax", f"cannot read the query: {exc}") from exc
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        tokens.pop()  # comments are not tokens: "SELECT 1; -- done" is one statement
    if not tokens:
        raise QueryRejected("query_empty", "the query is empty")
    if any(token.token_type == TokenType.SEMICOLON for token in tokens):
        raise QueryRejected("query_multiple", "send exactly one statement")
    first = tokens[0]
    if first.token_type not in (TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN):
        if first.text.lower() in _STATEMENTS or first.token_type != TokenType.VAR:
            raise QueryRejected(
                "query_not_read_only", f"only SELECT queries run here, not {first.text.upper()}"
            )
        raise QueryRejected("query_syntax", f"a query starts with SELECT or WITH, not {first.text}")
    _check_clauses(tokens)
    try:
        parsed = sqlglot.parse(sql, dialect="clickhouse")
    except sqlglot.errors.ParseError as exc:  # without the terminal underline sqlglot adds
        message = _ANSI.sub("", str(exc))
        raise QueryRejected("query_syntax", f"cannot parse the query: {message}") from exc
    statements = [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]
    if len(statements) != 1:
        raise QueryRejected("query_multiple", "send exactly one statement")
    tree = statements[0]
    while isinstance(tree, exp.Subquery) and not tree.alias:
        tree = tree.this
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        raise QueryRejected(
            "query_not_read_only", f"only SELECT queries run here, not {tree.key.upper()}"
        )
    for node in tree.walk():
        if isinstance(node, exp.Identifier) and node.name.lower().startswith(RESERVED_PREFIX):
            raise QueryRejected(
                "query_identifier_reserved", f"names starting {RESERVED_PREFIX} are reserved"
            )
        _check_node(node)
    return tree


def _check_clauses(tokens: list[Any]) -> None:
    """SETTINGS, FORMAT and INTO OUTFILE anywhere, found in the tokens (comments are not)."""
    for i, token in enumerate(tokens):
        kind = token.token_type
        after = tokens[i + 1].token_type if i + 1 < len(tokens) else None
        after_text = tokens[i + 1].text.upper() if i + 1 < len(tokens) else ""
        if (
            kind == TokenType.SETTINGS
            or (kind == TokenType.INTO and after_text == "OUTFILE")
            or (kind == TokenType.FORMAT and after in (TokenType.VAR, TokenType.IDENTIFIER))
        ):
            raise QueryRejected(
                "query_clause_forbidden", f"{token.text.upper()} clauses are not allowed"
            )


class _Rewriter:
    """Resolves every table reference of one query and replaces real tables by their scoped
    subqueries, renaming CTEs on the way (their names then mean the same thing to ClickHouse)."""

    def __init__(self, scope: Scope, database: str) -> None:
        self.scope = scope
        self.database = database
        self.ctes = 0

    def rewrite(self, tree: exp.Query) -> exp.Query:
        # iterative: a long chain of operators nests deeper than Python's recursion limit
        stack: list[tuple[exp.Expr, dict[str, str]]] = [(tree, {})]
        while stack:
            node, visible = stack.pop()
            with_ = node.args.get("with_") if isinstance(node, exp.Query) else None
            if isinstance(with_, exp.With):
                visible = self._ctes(with_, visible, stack)
            for child in list(node.iter_expressions()):
                if child is with_:
                    continue
                if isinstance(child, exp.UDTF):  # VALUES, UNNEST, LATERAL
                    raise QueryRejected(
                        "query_table_function",
                        f"table functions are not allowed: {child.key.upper()}",
                    )
                if isinstance(child, exp.Table):
                    self._table(child, child, visible)
                elif isinstance(child, exp.Final) and isinstance(child.this, exp.Table):
                    self._table(child.this, child, visible)
                else:
                    stack.append((child, visible))
        return tree

    def _ctes(
        self,
        with_: exp.With,
        outer: dict[str, str],
        stack: list[tuple[exp.Expr, dict[str, str]]],
    ) -> dict[str, str]:
        if with_.args.get("recursive"):
            raise QueryRejected("query_clause_forbidden", "WITH RECURSIVE is not allowed")
        visible = dict(outer)
        for cte in with_.expressions:
            stack.append((cte, dict(visible)))  # a CTE sees the ones before it, not itself
            if cte.args.get("scalar"):  # WITH <expr> AS name: a value, not a table
                continue
            alias = cte.args.get("alias")
            if not isinstance(alias, exp.TableAlias) or not alias.name:
                raise QueryRejected("query_syntax", "every CTE needs a name")
            self.ctes += 1
            renamed = f"{CTE_PREFIX}{self.ctes}"
            visible[alias.name] = renamed
            alias.set("this", exp.to_identifier(renamed))
        return visible

    def _table(self, table: exp.Table, node: exp.Expr, visible: dict[str, str]) -> None:
        """``node`` is the table or the FINAL around it."""
        shown = table.sql("clickhouse")
        alias = table.args.get("alias")
        misread = table.name.lower() in _KEYWORD_TABLE_FUNCTIONS and alias and alias.columns
        if not isinstance(table.this, exp.Identifier) or misread:
            called = table.name if misread else str(getattr(table.this, "name", ""))
            if called.lower() in EXTERNAL_FUNCTIONS | SERVER_STATE_FUNCTIONS:
                raise QueryRejected("query_function_forbidden", f"{called}() is not allowed")
            raise QueryRejected("query_table_function", f"table functions are not allowed: {shown}")
        extra = sorted(k for k, v in table.args.items() if v and k not in _TABLE_ARGS)
        if extra:
            raise QueryRejected(
                "query_clause_forbidden", f"{', '.join(extra).upper()} on {shown} is not allowed"
            )
        if not _in_source_position(node):
            raise QueryRejected("query_unresolved", f"a table reference out of place: {shown}")
        while isinstance(node.parent, exp.Subquery) and not node.parent.alias:
            node = node.parent  # FROM (events): the parentheses go with the table
        name, db = table.name, table.db
        alias = alias or exp.TableAlias(this=exp.to_identifier(name))
        if not db and not table.catalog and name in visible:
            node.replace(exp.Table(this=exp.to_identifier(visible[name]), alias=alias))
            return
        if table.catalog or (db and db != self.database) or name not in self.scope.tables:
            allowed = ", ".join(sorted(self.scope.tables))
            raise QueryRejected("query_table_forbidden", f"table {shown} is not one of: {allowed}")
        final = (self.scope.final or isinstance(node, exp.Final)) and name in FINAL_TABLES
        node.replace(
            exp.Subquery(this=_scoped(name, self.scope, self.database, final), alias=alias)
        )


def _in_source_position(node: exp.Expr) -> bool:
    parent = node.parent
    while isinstance(parent, exp.Subquery) and not parent.alias:  # FROM (events)
        parent = parent.parent
    if isinstance(parent, exp.Join):
        return str(parent.args.get("kind") or "").upper() != "ARRAY"
    return isinstance(parent, exp.From)


# The scoped read ends in a LIMIT no table reaches, as a barrier: a filter cannot move below a
# LIMIT without changing the answer, so the engine evaluates the caller's conditions only on
# the rows the tenant filter let through. Without it chDB merged the scoped subquery into the
# caller's query and evaluated the caller's WHERE first (PREWHERE steps ordered by column
# size, the key column last): an expression that fails on a value (toUInt32(message), a
# division by zero) told a caller about other tenants' rows, and quoted their values.
BARRIER = 2**64 - 1


def _scoped(name: str, scope: Scope, database: str, final: bool) -> exp.Select:
    table = exp.Table(
        this=exp.to_identifier(name),
        db=exp.to_identifier(database),
        alias=exp.TableAlias(this=exp.to_identifier(SCOPED_ALIAS)),
    )
    select = exp.select(exp.Star()).from_(exp.Final(this=table) if final else table)
    if scope.tenant is not None and scope.tables[name]:
        select = select.where(
            exp.EQ(
                this=exp.column("tenant", table=SCOPED_ALIAS),
                expression=exp.Literal.string(scope.tenant),
            )
        ).limit(BARRIER)
    return select


def _scoped_forms(scope: Scope, database: str) -> set[str]:
    return {
        _scoped(name, scope, database, final).sql("clickhouse")
        for name in scope.tables
        for final in ((False, True) if name in FINAL_TABLES else (False,))
    }


# -- what runs: the generated text, parsed again and checked -----------------------------------


def _verify(out: str, scope: Scope, database: str) -> None:
    try:
        final = sqlglot.parse_one(out, dialect="clickhouse")
    except sqlglot.errors.SqlglotError as exc:
        raise QueryRejected(
            "query_unresolved", "the query does not survive rewriting unchanged; simplify it"
        ) from exc
    if not isinstance(final, (exp.Select, exp.SetOperation)) or (
        final.sql(dialect="clickhouse", comments=False) != out
    ):
        raise QueryRejected(
            "query_unresolved", "the query does not survive rewriting unchanged; simplify it"
        )
    for node in final.walk():
        _check_node(node)
    _check_tables(final, _scoped_forms(scope, database), database)
    _check_tokens(out)


def _check_node(node: exp.Expr) -> None:
    if isinstance(node.parent, exp.Table) and node.arg_key not in _TABLE_ARGS:
        raise QueryRejected(
            "query_clause_forbidden", f"{str(node.arg_key).upper()} on a table is not allowed"
        )
    if isinstance(node, exp.Query):
        for arg, clause in _QUERY_CLAUSES.items():
            if node.args.get(arg):
                raise QueryRejected("query_clause_forbidden", f"{clause} clauses are not allowed")
    if isinstance(node, (exp.Any, exp.All)):
        raise QueryRejected("query_syntax", "ANY/ALL (subquery) is not supported; use IN")
    if isinstance(node, exp.UDTF):  # VALUES, UNNEST, LATERAL
        raise QueryRejected(
            "query_table_function", f"table functions are not allowed: {node.key.upper()}"
        )
    if isinstance(node, exp.Apply):
        raise QueryRejected("query_function_forbidden", "APPLY is not allowed")
    if isinstance(node, _NAMED_FUNCTIONS):
        if isinstance(node.parent, exp.Table):
            return  # FROM f(...): a table function, refused as one by the rewriter
        if not function_allowed(str(node.name)):
            raise QueryRejected(
                "query_function_forbidden", f"function {node.name}() is not allowed"
            )
        return
    if isinstance(node, exp.Func):
        return  # a function sqlglot knows; its ClickHouse name is checked in the text
    if not isinstance(node, _STRUCTURE):
        raise QueryRejected("query_syntax", f"{node.key.upper()} is not supported here")
    if isinstance(node, exp.In):
        _check_in(node)
    if isinstance(node, (exp.From, exp.Join)) and not _is_source(node):
        raise QueryRejected(
            "query_unresolved", f"cannot resolve {node.this.sql('clickhouse')} as a table"
        )
    if (
        isinstance(node, exp.Column)
        and not node.table
        and node.name.lower() in SERVER_STATE_FUNCTIONS
    ):
        raise QueryRejected(
            "query_function_forbidden", f"{node.name} reads server state and is not allowed"
        )


def _is_source(node: exp.From | exp.Join) -> bool:
    """FROM and JOIN name a table, a FINAL table or a subquery (ARRAY JOIN: expressions);
    sqlglot reads some table names as columns, which must not pass unscoped."""
    if isinstance(node, exp.Join) and str(node.args.get("kind") or "").upper() == "ARRAY":
        return True
    source = node.this
    if isinstance(source, exp.Final):
        source = source.this
    return isinstance(source, (exp.Table, exp.Subquery, exp.UDTF))


def _check_in(node: exp.In) -> None:
    """``x IN name`` and ``x IN (name)`` read the table ``name`` in ClickHouse."""
    if node.args.get("field") is not None or node.args.get("unnest") is not None:
        raise QueryRejected(
            "query_unresolved", "write IN (SELECT ...) or IN (values), not IN <name>"
        )
    values = node.expressions
    if len(values) == 1:
        value = values[0]
        while isinstance(value, (exp.Paren, exp.Alias)):
            value = value.this
        if isinstance(value, (exp.Column, exp.Dot, exp.Identifier, exp.Table)):
            raise QueryRejected(
                "query_unresolved",
                "IN (name) can read a table in ClickHouse; write = name or IN (SELECT ...)",
            )


def _check_tables(final: exp.Expr, scoped: set[str], database: str) -> None:
    """Every table in what runs is a scoped subquery or a renamed CTE, as sqlglot's scopes
    resolve it; a table no scope accounts for is refused."""
    probe = final.copy()
    for cte in probe.find_all(exp.CTE):  # scalar WITH values: scoped as SELECT <value>
        if cte.args.get("scalar") and not isinstance(cte.this, (exp.Query, exp.Subquery)):
            cte.set("this", exp.select(cte.this))
    seen: set[int] = set()
    for sql_scope in traverse_scope(probe):
        for table in sql_scope.tables:
            seen.add(id(table))
            if not _table_resolved(table, sql_scope, scoped, database):
                raise QueryRejected(
                    "query_unresolved", f"cannot resolve {table.sql('clickhouse')} with certainty"
                )
    if any(id(table) not in seen for table in probe.find_all(exp.Table)):
        raise QueryRejected("query_unresolved", "a table reference no scope accounts for")


def _table_resolved(table: exp.Table, sql_scope: SqlScope, scoped: set[str], database: str) -> bool:
    if not isinstance(table.this, exp.Identifier) or table.catalog:
        return False
    if table.db:
        source = table.parent.parent if isinstance(table.parent, exp.Final) else table.parent
        select = source.parent if isinstance(source, exp.From) else None
        return (
            table.db == database
            and isinstance(select, exp.Select)
            and isinstance(select.parent, exp.Subquery)
            and select.sql("clickhouse") in scoped
        )
    if not table.name.startswith(CTE_PREFIX):
        return False
    resolved = sql_scope.sources.get(table.name)
    if not isinstance(resolved, SqlScope) or not resolved.is_cte:
        return False
    cte = resolved.expression.parent
    return isinstance(cte, exp.CTE) and not cte.args.get("scalar")


def _check_tokens(out: str) -> None:
    """The last word on functions: every call in the text that runs is allowed, no server-state
    name stands bare, and no SETTINGS/FORMAT/INTO slipped through."""
    tokens = _CLICKHOUSE.tokenize(out)
    _check_clauses(tokens)
    for i, token in enumerate(tokens):
        kind = token.token_type
        if kind in _TEXT_TOKENS:
            continue
        after = tokens[i + 1].token_type if i + 1 < len(tokens) else None
        before = tokens[i - 1].token_type if i else None
        if after == TokenType.L_PAREN:
            structural = (
                kind in _NOT_A_CALL
                or kind in TYPE_TOKENS
                or token.text.upper() == "BY"  # LIMIT n BY (...)
            )
            if not structural and not function_allowed(token.text):
                raise QueryRejected(
                    "query_function_forbidden", f"function {token.text}() is not allowed"
                )
        elif (
            token.text.lower() in SERVER_STATE_FUNCTIONS
            and before not in (TokenType.DOT, TokenType.ALIAS)
            and after != TokenType.DOT
        ):
            raise QueryRejected(
                "query_function_forbidden", f"{token.text} reads server state and is not allowed"
            )
