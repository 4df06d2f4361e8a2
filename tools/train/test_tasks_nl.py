import os
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus as C  # noqa: E402
import tasks_nl as N  # noqa: E402


def text(ids):
    return "".join(chr(i) if i < 256 else f"<{i}>" for i in ids)


def test_corpus_hash_and_splits():
    c = C.load()  # raises if the decompressed text's sha256 differs from the documented one
    tr, ho = c["train"], c["heldout"]
    assert len(tr) > 5_000_000 and len(ho) > 500_000
    assert ((tr.text == 10) | ((tr.text >= 32) & (tr.text <= 126))).all()
    assert len(ho.entries) > 1000
    # a held-out document is not a training document (documents are distinct by construction)
    probe = bytes(ho.text[1000:1200])
    assert bytes(tr.text).find(probe) < 0


@pytest.mark.parametrize("task", N.TASKS)
def test_determinism_and_length(task):
    for L in (1024, 4096):
        a = N.make_split_example("eval", task, L, 3)
        b = N.make_split_example("eval", task, L, 3)
        c = N.make_split_example("eval", task, L, 4)
        assert a["prompt"] == b["prompt"] and a["answer"] == b["answer"] and a["prompt"] != c["prompt"]
        p = np.array(a["prompt"])
        assert len(p) == L and p[0] == N.BOS and p.max() < N.VOCAB_SIZE and p.min() >= 0
        assert (p == N.QTOK).sum() == 1 and (p == N.ATOK).sum() == 1 and a["answer"][-1] == N.END
        t = N.make_split_example("train", task, L, 3, aux=3)
        assert len(t["prompt"]) == L
        for pos, tok in t["aux_targets"]:
            assert t["prompt"][pos + 1] == tok


def test_answers_are_in_the_prompt():
    for i in range(5):
        for task in ("single_qa", "lookalike"):
            e = N.make_split_example("eval", task, 2048, i)
            s = text(e["prompt"])
            k = re.search(r"<259>(\S+) is $", s).group(1)
            v = text(e["answer"][:-1])
            assert s.count(f"The code for {k} is {v}.") == 1
        e = N.make_split_example("eval", "lookalike", 2048, i)
        s = text(e["prompt"])
        k = re.search(r"<259>(\S+) is $", s).group(1)
        keys = re.findall(r"The code for (\S+) is \d{4}\.", s)
        near = [x for x in keys if x != k and len(x) == len(k) and sum(a != b for a, b in zip(x, k)) == 1]
        assert len(near) == 3
        e = N.make_split_example("eval", "multi_hop", 2048, i)
        s, a = text(e["prompt"]), text(e["answer"][:-1])
        c = re.search(r"<259>(\S+) is $", s).group(1)
        b, rest = re.match(r"that of (\S+), \S+ is that of (\S+), \S+ is (\d{4})$", a).group(1, 2), a
        assert f"The code for {c} is that of {b[0]}." in s and f"The code for {b[0]} is that of {b[1]}." in s
        e = N.make_split_example("eval", "aggregation", 2048, i)
        s, a = text(e["prompt"]), text(e["answer"][:-1])
        k = re.search(r"<259>(\S+) #1: $", s).group(1)
        logs = re.findall(rf"Log {re.escape(k)} #(\d): (\d{{4}})\.", s)
        assert [int(j) for j, _ in logs] == list(range(1, len(logs) + 1)) and 3 <= len(logs) <= 5
        exp = logs[0][1] + "".join(f", {k} #{j}: {v}" for j, v in logs[1:]) + f", {k} #{len(logs) + 1}: none"
        assert a == exp
        e = N.make_split_example("eval", "multi_value", 2048, i)
        s, a = text(e["prompt"]), text(e["answer"][:-1])
        k = re.search(r"The codes for (\S+) are $", s).group(1)
        assert s.count(f"The codes for {k} are {a}.") == 1
        e = N.make_split_example("eval", "sentence_qa", 2048, i)
        s, a = text(e["prompt"]), text(e["answer"][:-1])
        name = re.search(r"<258>What is (\S+)\?<259>", s).group(1)
        body = s[:s.index("<258>")]
        assert body.count(f"{name}: ") == 1 and f"\n{name}: {a}\n" in body
