"""Page tokens: pages cover a listing exactly once, survive inserts and deletes, and forged or foreign tokens fail."""

import pytest

from embedsvc.core.paging import PageTokens, page_size
from embedsvc.errors import EmbedsvcError, Reason

TOKENS = PageTokens(b"k" * 32)


def all_pages(entries, size, listing="things", descending=False):
    seen, token = [], ""
    while True:
        page = TOKENS.page(entries, str, listing=listing, token=token, size=size, descending=descending)
        seen.append(page.entries)
        token = page.next_page_token
        if not token:
            return seen


def test_small_pages_cover_everything_once():
    names = [f"n{i:03d}" for i in range(23)]
    pages = all_pages(names, 5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [n for p in pages for n in p] == names
    assert all_pages(names, 23) == [names] and all_pages([], 5) == [[]]


def test_a_deleted_entry_does_not_lose_the_place():
    names = ["a", "b", "c", "d", "e"]
    first = TOKENS.page(names, str, listing="x", token="", size=2)
    assert first.entries == ["a", "b"]
    later = TOKENS.page(["a", "c", "d", "e"], str, listing="x", token=first.next_page_token, size=2)
    assert later.entries == ["c", "d"]  # "b" was deleted: the listing goes on after where "b" was
    newest_first = TOKENS.page(["e", "d", "c"], str, listing="y", token=TOKENS.issue("y", "d"), size=5)
    assert newest_first.entries == ["c"]
    gone = TOKENS.page(["e", "c", "a"], str, listing="y", token=TOKENS.issue("y", "d"), size=5, descending=True)
    assert gone.entries == ["c", "a"]


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        TOKENS.issue("things", "n001")[:-2] + "xx",  # signature damaged
        TOKENS.issue("things", "n001").replace(".", "A.", 1),  # payload damaged
        PageTokens(b"o" * 32).issue("things", "n001"),  # another server's secret
        TOKENS.issue("other listing", "n001"),
    ],
)
def test_forged_damaged_and_foreign_tokens_are_refused(token):
    with pytest.raises(EmbedsvcError) as info:
        TOKENS.page(["n000", "n001", "n002"], str, listing="things", token=token, size=1)
    assert (info.value.reason, info.value.field) == (Reason.INVALID_PAGE_TOKEN, "page_token")


def test_page_sizes():
    assert page_size(0, 1000) == 100 and page_size(5000, 1000) == 1000 and page_size(7, 1000) == 7
    with pytest.raises(EmbedsvcError) as info:
        page_size(-1, 1000)
    assert info.value.reason is Reason.INVALID_VALUE


def test_the_secret_is_kept_in_the_data_dir(tmp_path):
    first = PageTokens.in_data_dir(tmp_path)
    token = first.issue("things", "x")
    assert PageTokens.in_data_dir(tmp_path).position(token, "things") == "x"  # valid after a restart
    assert (tmp_path / "page-tokens.key").stat().st_mode & 0o777 == 0o600
