"""``bms simulate``: a summary on good input, one located line and exit 2 on bad input."""

from __future__ import annotations

import pytest

from bms.cli.main import main


def test_simulate_prints_a_summary_whose_charge_matches_the_load(capsys):
    assert main(["simulate", "--duration", "360", "--current", "45", "--dt", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "pack-a-96s: 96s1p, 8 modules" in out
    assert "4.50 Ah" in out  # 45 A for 0.1 h


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--soc", "1.5"], "--soc: expected a fraction 0..1"),
        (["--dt", "0.5"], "--dt: expected 0.001..0.1 s"),
        (["--pack", "no_such_pack"], "no_such_pack: no such pack file or shipped name"),
    ],
)
def test_simulate_rejects_bad_input_with_one_line(capsys, argv, message):
    assert main(["simulate", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_pack_file_with_a_bad_field_names_file_line_and_field(tmp_path, capsys):
    from bms.data import DATA_DIR

    text = (DATA_DIR / "packs" / "pack_a_96s.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  modules: 8", "  modules: 7"))
    assert main(["simulate", "--pack", str(bad)]) == 2
    err = capsys.readouterr().err
    line = text.splitlines().index("  modules: 8") + 1
    assert f"bad.yaml:{line}: topology.modules: must divide series (96) evenly" in err
