"""``flaregate teams`` over the local SQLite store: the same checks as the admin API."""

from __future__ import annotations

import json

from flaregate.hosts.local.cli import main


def test_the_teams_command_creates_updates_shows_and_deletes(tmp_path, capsys):
    data = ["--data-dir", str(tmp_path)]
    assert main(["teams", "create", "research", "--name", "R", "--models", "mock-*",
                 "--budget-usd-month", "50", "--tags", "cc=r1", *data]) == 0
    made = json.loads(capsys.readouterr().out)
    assert (made["allowed_models"], made["budget_usd_month"], made["tags"]) == (["mock-*"], 50.0, {"cc": "r1"})
    assert main(["teams", "update", "research", "--budget-tokens-day", "1000", *data]) == 0
    updated = json.loads(capsys.readouterr().out)
    assert updated["budget_tokens_day"] == 1000 and updated["budget_usd_month"] == 50.0  # the rest kept
    assert main(["teams", "create", "bad", "--budget-usd-day", "-1", *data]) == 2
    assert main(["teams", "create", "no/slash", *data]) == 2
    assert main(["keys", "create", "--team", "research", "--models", "gpt-4", *data]) == 2
    assert "outside the team" in capsys.readouterr().err
    assert main(["keys", "create", "--team", "missing", *data]) == 2
    assert main(["keys", "create", "--team", "research", "--models", "mock-1", *data]) == 0
    key_id = capsys.readouterr().out.split()[0]
    assert main(["teams", "show", "research", *data]) == 0
    assert json.loads(capsys.readouterr().out)["keys"] == [key_id]
    assert main(["teams", "delete", "research", *data]) == 1  # it still has a key
    assert main(["keys", "revoke", key_id, *data]) == 0
    assert main(["teams", "delete", "research", *data]) == 0
    capsys.readouterr()
    assert main(["teams", "list", *data]) == 0
    assert capsys.readouterr().out == ""
