"""QIDO-RS searches run on the C-FIND engine (shared.query): the same matching, one page at a time.

When every key is matched in SQL, the page (offset, limit) is cut in SQL and only that page is then answered
by ``run_query``. Keys outside the index are matched on stored attributes, so for those the engine returns
every match (at most ``max_results``) and the page is cut afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shared.query.levels import LEVELS, keys_up_to
from shared.query.search import Query, TooManyMatches, matching_statement, run_query


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    more: bool  # further matches exist beyond this page


class TooManyToPage(Exception):
    """Keys outside the index matched more entities than the node answers in one search."""


def search_page(session: Session, level: str, values: dict[str, Any], requested: list[str], offset: int,
                limit: int, max_results: int, ignore_accents: bool = False) -> Page:
    """The entities of ``level`` that ``values`` match, ordered by arrival, from ``offset``, at most ``limit``."""
    statement, json_matchers = matching_statement(level, values, ignore_accents)
    if json_matchers:
        try:
            rows = run_query(session, Query(level=level, values=values, limit=max_results, requested=requested,
                                            ignore_accents=ignore_accents))
        except TooManyMatches as exc:
            raise TooManyToPage(str(exc)) from exc
        return Page(rows[offset:offset + limit], len(rows) > offset + limit)
    spec = LEVELS[level]
    unique = keys_up_to(level)[spec.unique_key].column
    page = session.execute(statement.add_columns(unique).order_by(spec.table.pk).offset(offset).limit(limit + 1))
    uids = [row[1] for row in page]
    if not uids[:limit]:
        return Page([], False)
    narrowed = dict(values, **{spec.unique_key: uids[:limit]})
    rows = run_query(session, Query(level=level, values=narrowed, limit=limit, requested=requested,
                                    ignore_accents=ignore_accents))
    return Page(rows, len(uids) > limit)
