"""Reading a paged listing to its end, as a user of `after=` and `limit=` does."""

from __future__ import annotations

import pytest


def pages(list_page, limit, cursor=lambda item: item, most: int = 10_000) -> list:
    """Every item, a page of `limit` at a time: `list_page(after=, limit=)` gives a page,
    `cursor(its last item)` the next page's `after`; fails if a page is over `limit` or
    the pages never end."""
    out, after = [], None
    for _ in range(most):
        page = list_page(after=after, limit=limit)
        assert len(page) <= limit
        if not page:
            return out
        out.extend(page)
        after = cursor(page[-1])
    pytest.fail("the listing did not come to an end")
