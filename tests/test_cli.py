"""The CLI's contract: exit codes and one-line errors, whatever command is involved."""

from __future__ import annotations

import json

from moesim.cli import main


def test_version_json_names_moesim_and_numpy(capsys):
    assert main(["version", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["moesim"]
    assert data["dependencies"]["numpy"]


def test_unknown_command_is_a_user_error_without_traceback(capsys):
    assert main(["no-such-command"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("moesim: error:")
    assert len(err.strip().splitlines()) == 1


def test_no_arguments_prints_help_and_succeeds(capsys):
    assert main([]) == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_an_internal_error_exits_2_with_traceback(capsys, monkeypatch):
    import moesim.cli_version as v

    def boom():
        raise RuntimeError("bug")

    monkeypatch.setattr(v, "versions", boom)
    assert main(["version"]) == 2
    assert "Traceback" in capsys.readouterr().err
