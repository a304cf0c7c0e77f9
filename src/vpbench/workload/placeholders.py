"""Where each ``$n`` of a normalised statement stands, read from PostgreSQL's own parse
tree (pglast's JSON form), and the statement with its ``$n`` renamed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vpbench.workload.statements import walk

COMPARISONS = ("AEXPR_OP", "AEXPR_OP_ANY", "AEXPR_OP_ALL", "AEXPR_IN", "AEXPR_BETWEEN",
               "AEXPR_NOT_BETWEEN", "AEXPR_LIKE", "AEXPR_ILIKE")  # fmt: skip
"""the A_Expr kinds that compare their two sides"""


def compared_columns(tree: Any) -> Iterator[tuple[int, tuple[tuple[str, ...], bool]]]:
    """(parameter number, (column reference, whether the parameter is an array)) for every
    parameter compared with a column (``= ANY($1)`` takes an array), assigned to an INSERT
    column or SET in an UPDATE."""
    for key, node in walk(tree):
        if key == "A_Expr" and node.get("kind") in COMPARISONS:
            left, right = node.get("lexpr"), node.get("rexpr")
            for column_side, param_side in ((left, right), (right, left)):
                column = _column_ref(column_side)
                if column is not None:
                    array = node["kind"] in ("AEXPR_OP_ANY", "AEXPR_OP_ALL") and param_side is right
                    for number in _param_numbers(param_side):
                        yield number, (column, array)
        elif key == "InsertStmt":
            columns = [t["ResTarget"]["name"] for t in node.get("cols", [])]
            select = (node.get("selectStmt") or {}).get("SelectStmt", {})
            for row in select.get("valuesLists", []):
                for column, item in zip(columns, row["List"]["items"], strict=False):
                    for number in _param_numbers(item):
                        yield number, ((column,), False)
        elif key == "UpdateStmt":
            for target in node.get("targetList", []):
                for number in _param_numbers(target["ResTarget"].get("val")):
                    yield number, ((target["ResTarget"]["name"],), False)


def limit_parameters(tree: Any) -> Iterator[tuple[int, str]]:
    """(parameter number, "LIMIT" or "OFFSET") for every parameter that is one."""
    for key, node in walk(tree):
        if key == "SelectStmt":
            for field, clause in (("limitCount", "LIMIT"), ("limitOffset", "OFFSET")):
                for number in _param_numbers(node.get(field)):
                    yield number, clause


def _column_ref(node: Any) -> tuple[str, ...] | None:
    node = _uncast(node)
    if isinstance(node, dict) and "ColumnRef" in node:
        fields = node["ColumnRef"]["fields"]
        if all("String" in f for f in fields):
            return tuple(str(f["String"]["sval"]) for f in fields)
    return None


def _param_numbers(node: Any) -> list[int]:
    node = _uncast(node)
    if isinstance(node, dict):
        if "ParamRef" in node:
            return [int(node["ParamRef"]["number"])]
        if "List" in node:
            return [n for item in node["List"].get("items", []) for n in _param_numbers(item)]
    return []


def _uncast(node: Any) -> Any:
    while isinstance(node, dict) and "TypeCast" in node:
        node = node["TypeCast"]["arg"]
    return node


def _param_locations(tree: Any) -> Iterator[tuple[int, int]]:
    """(byte offset, number) of every ``$n`` in a tree."""
    for key, node in walk(tree):
        if key == "ParamRef":
            yield int(node["location"]), int(node["number"])


def renumbered(text: str, tree: Any, names: dict[int, str]) -> str:
    """``text`` with each ``$n`` (found in its parse tree ``tree``, not by a pattern) as
    ``:name``."""
    data = text.encode()
    for location, number in sorted(set(_param_locations(tree)), reverse=True):
        token = f"${number}".encode()
        if data[location : location + len(token)] == token:
            data = data[:location] + f":{names[number]}".encode() + data[location + len(token) :]
    return data.decode()
