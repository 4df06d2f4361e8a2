import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks as T  # noqa: E402


@pytest.mark.parametrize("task", T.TASKS)
def test_determinism(task):
    a = T.make_split_example("eval", task, 1024, 7)
    b = T.make_split_example("eval", task, 1024, 7)
    c = T.make_split_example("eval", task, 1024, 8)
    assert a["prompt"] == b["prompt"] and a["answer"] == b["answer"]
    assert a["prompt"] != c["prompt"]
    # training-time recall items must not change eval prompts' generator stream usage
    d = T.make_split_example("train", task, 1024, 7, aux=5)
    assert len(d["prompt"]) == 1024 and len(d["aux_targets"]) == 10


@pytest.mark.parametrize("task", T.TASKS)
@pytest.mark.parametrize("L", T.LENGTHS)
def test_lengths_and_vocab(task, L):
    for i in range(3):
        ex = T.make_split_example("eval", task, L, i)
        assert ex["context_length"] == L == len(ex["prompt"])
        p = np.array(ex["prompt"])
        assert p.min() >= 0 and p.max() < T.VOCAB_SIZE
        assert ex["prompt"][0] == T.BOS
        assert not ((p >= 10) & (p < 16)).any()


def _records(prompt):
    recs = []
    for i, t in enumerate(prompt):
        if t == T.REC:
            recs.append(tuple(prompt[i + 1:i + 6]))
    return recs


@pytest.mark.parametrize("L", [512, 2048, 8192])
def test_answers_present(L):
    for i in range(5):
        ex = T.make_split_example("eval", "single_qa", L, i)
        k = ex["prompt"][-3:-1]
        assert (k[0], k[1], T.SEP, *ex["answer"]) in _records(ex["prompt"])

        ex = T.make_split_example("eval", "multi_qa", L, i)
        q = ex["prompt"][-9:-1]
        recs = _records(ex["prompt"])
        for j in range(4):
            assert (q[2 * j], q[2 * j + 1], T.SEP, ex["answer"][2 * j], ex["answer"][2 * j + 1]) in recs

        ex = T.make_split_example("eval", "multi_hop", L, i)
        recs = _records(ex["prompt"])
        cur = tuple(ex["prompt"][-3:-1])
        a = ex["answer"]
        for hop in range(3):
            nxt = tuple(a[3 * hop:3 * hop + 2])
            assert (cur[0], cur[1], T.SEP, nxt[0], nxt[1]) in recs
            cur = nxt
        assert T.VAL_BASE <= a[-1] < T.VAL_BASE + T.N_VAL

        ex = T.make_split_example("eval", "aggregation", L, i)
        K = tuple(ex["prompt"][-3:-1])
        mine = [r for r in _records(ex["prompt"]) if r[:2] == K]
        assert 3 <= len(mine) <= 5
        exp = list(mine[0][3:5])
        for j, r in enumerate(mine[1:], start=1):
            assert r[2] == T.ORD_BASE + j
            exp += [K[0], K[1], T.ORD_BASE + j, r[3], r[4]]
        exp += [K[0], K[1], T.ORD_BASE + len(mine), T.END]
        assert ex["answer"] == exp
        for s in ex["needed"]:
            assert ex["prompt"][s] == T.REC and tuple(ex["prompt"][s + 1:s + 3]) == K


def test_aggregation_random_blocks():
    res = T.check_aggregation_random_blocks(n_prompts=40, trials=25)
    print("fraction of (prompt, random 10%-of-64-token-blocks) draws that contain every needed record:",
          res)
    for L, f in res.items():
        assert f < 0.01, (L, f)
