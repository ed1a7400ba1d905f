"""``warren server --notify URL`` (repeatable) and ``$WARREN_NOTIFY`` (URLs separated by spaces
or commas): each must be an http(s) URL, refused in one line before anything starts."""

from __future__ import annotations

from typer.testing import CliRunner

from warren.cli.main import _notify_urls, app


def test_urls_come_from_each_flag_and_from_lists_separated_by_spaces_or_commas() -> None:
    # click hands $WARREN_NOTIFY="http://a/1, http://b/2" over split on whitespace.
    assert _notify_urls(["http://a/1,", "http://b/2", "https://c/3,http://a/1"]) == (
        "http://a/1", "http://b/2", "https://c/3",
    )  # fmt: skip
    assert _notify_urls(None) == ()


def test_a_url_that_is_not_http_is_one_line_and_status_2() -> None:
    for args, env in (
        (["server", "--notify", "hooks.example/x"], {}),
        (["server"], {"WARREN_NOTIFY": "http://ok.example/x, ftp://hooks.example/x"}),
    ):
        result = CliRunner().invoke(app, args, env={**env, "COLUMNS": "200"})
        assert result.exit_code == 2, result.output
        lines = [line.strip("│ ") for line in result.output.splitlines() if "is not an" in line]
        assert len(lines) == 1 and "is not an http:// or https:// URL" in lines[0], result.output
