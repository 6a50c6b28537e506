"""``alarm eval compare``: the paper's numbers next to the reports of a run, read from the groups that hold them."""
import json

from alarm.cli import main
from alarm.eval.paper import PAPER_TABLE, compare


def _section(total, groups):
    return {"total": {"accuracy": total}, "groups": groups}


def test_compare_reads_each_number_from_its_group(tmp_path, capsys):
    (tmp_path / "alarm_ca").mkdir()
    (tmp_path / "alarm_e").mkdir()
    tasks = {"task": {"sound": {"accuracy": 60.0}, "music": {"accuracy": 50.0}, "speech": {"accuracy": 70.0}}}
    mmau = {"paper": _section(59.0, tasks), "official": _section(58.0, tasks), "strict": _section(57.0, tasks)}
    (tmp_path / "alarm_ca/mmau-test-mini.report.json").write_text(json.dumps(mmau))
    (tmp_path / "alarm_ca/mmau-test.report.json").write_text(json.dumps({"answers_withheld": True}))
    (tmp_path / "alarm_ca/mmar.report.json").write_text(json.dumps(  # scored without --protocol paper
        {"official": _section(44.0, {}), "strict": _section(43.5, {})}))
    cats = {"category": {"Perception": {"accuracy": 41.0}, "Reasoning": {"accuracy": 80.0}}}
    (tmp_path / "alarm_e/mmsu.report.json").write_text(json.dumps(
        {"paper": _section(60.5, cats), "official": _section(61.0, cats), "strict": _section(59.0, cats)}))
    rows = {(r["model"], r["stem"], r["group"]): r for r in compare(tmp_path)}
    assert len(rows) == len(PAPER_TABLE)
    sound = rows[("alarm_ca", "mmau-test-mini", "sound")]
    assert (sound["reported"], sound["paper_protocol"], sound["official"], sound["strict"]) == (66.4, 60.0, 60.0, 60.0)
    assert rows[("alarm_ca", "mmau-test", "music")]["status"] == "answers withheld"
    mmar = rows[("alarm_ca", "mmar", None)]
    assert (mmar["paper_protocol"], mmar["official"], mmar["strict"], mmar["status"]) == (None, 44.0, 43.5, "scored")
    assert rows[("alarm_e", "mmsu", "perception")]["paper_protocol"] == 41.0  # groups matched up to case
    assert rows[("alarm_e", "mmsu", None)]["paper_protocol"] == 60.5
    assert rows[("alarm_e", "mmau-test-mini", "speech")]["status"] == "not run"
    assert main(["eval", "compare", str(tmp_path), "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert "| ALARM-CA | mmau-test-mini | task: sound | 66.4 | 60.0 | 60.0 | 60.0 |  |" in out
    assert "| ALARM-E | mmsu | category: reasoning | 78.3 | 80.0 | 80.0 | 80.0 |  |" in out
    assert "| ALARM-CA | mmau-test | task: sound | 61.1 | - | - | - | submit the predictions" in out
    assert len(json.loads((tmp_path / "rows.json").read_text())) == len(PAPER_TABLE)
    assert main(["eval", "compare", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err
