"""compare_oracles.py: pairs records by id and counts per cell."""
import json

import compare_oracles as C


def write(path, recs):
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


def rec(rid, task, L, frac):
    return {"id": rid, "task": task, "context_length": L, "oracle": {"fraction": frac}}


def test_pairs_by_id_and_counts(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write(a, [rec("1", "qa", 512, 0.25), rec("2", "qa", 512, 0.5), rec("3", "hop", 1024, 0.125), rec("4", "qa", 512, 1.0)])
    write(b, [rec("1", "qa", 512, 0.5), rec("2", "qa", 512, 0.5), rec("3", "hop", 1024, 0.0625)])  # no "4"
    assert C.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| qa | 512 | 2 | 0.375 / 0.500 | 0.375 / 0.500 | 1 / 0 / 1 |" in out
    assert "| hop | 1024 | 1 | 0.125 / 0.062 | 0.125 / 0.062 | 0 / 1 / 0 |" in out
    assert "3 requests:" in out and "more blocks for 1, fewer for 1, the same for 1" in out
