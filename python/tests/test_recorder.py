"""sparsebudget.recorder: the bundled model's traces recorded through the protocol equal the shipped
data/traces records (curves, dense quality, oracle; features within 1e-5) on a CPU subset; the
dense point reproduces the model's own greedy decoding; resume, bad models and bad requests."""
import json
import os
import sys

import pytest
import torch

from sparsebudget import recorder as R

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "tools", "train")
sys.path.insert(0, TRAIN)
import make_traces as M  # noqa: E402
import tasks as T  # noqa: E402
from model import load_model  # noqa: E402

WEIGHTS = os.path.join(ROOT, "data", "model", "model.safetensors")
CONFIG = os.path.join(ROOT, "data", "model", "config.json")


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return load_model(WEIGHTS, CONFIG)


def shipped(split):
    with open(os.path.join(ROOT, "data", "traces", f"{split}.jsonl")) as f:
        return {r["id"]: r for r in (json.loads(line) for line in f)}


def assert_same_record(mine, ref):
    assert [(p["blocks"], p["fraction"], p["quality"]) for p in mine["curve"]] == \
        [(p["blocks"], p["fraction"], p["quality"]) for p in ref["curve"]], mine["id"]
    for key in ("id", "task", "context_length", "block_size", "dense_quality", "oracle"):
        assert mine[key] == ref[key], (mine["id"], key)
    assert set(mine["features"]) == set(ref["features"])
    for k, v in ref["features"].items():
        assert abs(mine["features"][k] - v) <= 1e-5, (mine["id"], k, mine["features"][k], v)
    for p, q in zip(mine["curve"], ref["curve"]):  # the self-check fields, once the shipped files have them
        for key in ("top1_prob", "min_top1_prob"):
            if key in q:
                assert abs(p[key] - q[key]) <= 1e-5, (mine["id"], key, p[key], q[key])
            assert 0.0 <= p[key] <= 1.0


def test_bundled_model_matches_shipped_traces(model, tmp_path):
    """Every task at L=512 (one batch of 2 prompts x 5 budgets each) and one at L=1024."""
    step = M.make_step(model)
    ref = shipped("test")
    out = str(tmp_path / "test.jsonl")
    cells = [(task, 512, 2) for task in T.TASKS] + [("multi_hop", 1024, 1)]
    n = 0
    for task, L, count in cells:
        for rec in M.run_cell(step, "trace_test", task, L, count, 65536, out):
            assert_same_record(rec, ref[rec["id"]])
            n += 1
    assert n == 9


def test_dense_point_is_the_models_greedy_decoding(model, tmp_path):
    step = M.make_step(model)
    e = T.make_split_example("trace_test", "multi_qa", 512, 3)
    got = {}
    R.record_traces(step, [{"id": "x", "prompt": e["prompt"], "answer": e["answer"]}], str(tmp_path / "t.jsonl"),
                    hook=lambda rec, d: got.update(d["outputs"]))
    nb0 = 512 // 64
    assert sorted(got) == [2, 3, 4, 6, nb0]
    want = model.greedy(torch.tensor([e["prompt"]]), len(e["answer"]))[0].tolist()
    assert got[nb0] == want


def test_resume_skips_written_ids_and_cuts_a_torn_line(model, tmp_path):
    step = M.make_step(model)
    reqs = M.requests_for("trace_test", "single_qa", 512, 3)
    out = str(tmp_path / "r.jsonl")
    st = R.record_traces(step, reqs[:2], out)
    assert st["written"] == 2 and st["model_calls"] == 1 + 2  # one prefill + one call per answer token
    with open(out) as f:
        first = f.read()
    with open(out, "a") as f:
        f.write('{"id": "torn')  # an interrupted write
    st = R.record_traces(step, reqs, out)
    assert st == {**st, "written": 1, "skipped": 2}
    with open(out) as f:
        text = f.read()
    assert text.startswith(first) and text.count("\n") == 3
    again = R.record_traces(step, reqs, out)
    assert again["written"] == 0 and again["skipped"] == 3


def test_quality_function_and_fraction_grid(model, tmp_path):
    step = M.make_step(model)
    e = T.make_split_example("trace_test", "multi_hop", 512, 1)

    def prefix_match(req, toks):
        ref = req["answer"]
        return sum(a == b for a, b in zip(toks, ref)) / len(ref)

    out = str(tmp_path / "q.jsonl")
    R.record_traces(step, [{"id": "q", "prompt": e["prompt"], "answer": e["answer"], "task": "multi_hop"}], out,
                    grid=[0.25, 0.5, 0.7], quality=prefix_match)
    rec = json.loads(open(out).read())
    assert [p["blocks"] for p in rec["curve"]] == [2, 4, 6, 8]
    assert rec["oracle"]["criterion"] == "prefix_match"
    assert all(0.0 <= p["quality"] <= 1.0 for p in rec["curve"])
    assert rec["task"] == "multi_hop"


def test_protocol_violations_are_clear_errors(tmp_path):
    req = [{"id": "a", "prompt": [1, 2, 3, 4], "answer": [5]}]

    def no_attend(tokens, positions, attend):
        return torch.zeros(tokens.shape[0], 10)

    with pytest.raises(RuntimeError, match="never called attend"):
        R.record_traces(no_attend, req, str(tmp_path / "a.jsonl"))

    def twice(tokens, positions, attend):
        q = torch.zeros(tokens.shape[0], 2, tokens.shape[1], 4)
        attend(0, q, q, q)
        attend(0, q, q, q)
        return torch.zeros(tokens.shape[0], 10)

    with pytest.raises(RuntimeError, match="layer 0 called twice"):
        R.record_traces(twice, req, str(tmp_path / "b.jsonl"))

    def bad_shape(tokens, positions, attend):
        q = torch.zeros(tokens.shape[0], 3, tokens.shape[1], 4)
        k = torch.zeros(tokens.shape[0], 2, tokens.shape[1], 4)
        return attend(0, q, k, k)

    with pytest.raises(ValueError, match="kv heads 2 must divide q heads 3"):
        R.record_traces(bad_shape, req, str(tmp_path / "c.jsonl"))
    with pytest.raises(ValueError, match="give 'answer' token ids or 'max_new_tokens'"):
        R.record_traces(no_attend, [{"id": "a", "prompt": [1, 2]}], str(tmp_path / "d.jsonl"))
    with pytest.raises(ValueError, match="duplicate request id 'a'"):
        R.record_traces(no_attend, req * 2, str(tmp_path / "e.jsonl"))
    with pytest.raises(ValueError, match="a fraction grid point must be in"):
        R.grid_for(100, [1.5])


def test_monotone_oracle():
    assert R.monotone_oracle([2, 3, 4, 8], [0, 1, 0, 1], 1) == 8
    assert R.monotone_oracle([2, 3, 4, 8], [0, 1, 1, 1], 1) == 3
    assert R.monotone_oracle([2, 3, 4, 8], [1, 0, 0, 0], 0) == 2


def test_all_kv_heads_scope_selects_one_list_for_every_kv_head(model, tmp_path, monkeypatch):
    """selection_scope reaches every decode-time selection; with 'all_kv_heads' the kept blocks
    are the same for each kv head; the dense point is unchanged."""
    step = M.make_step(model)
    reqs = M.requests_for("trace_test", "multi_hop", 1024, 1)
    seen = []
    real = R.select_blocks

    def spy(*args, **kwargs):
        keep = real(*args, **kwargs)
        seen.append((kwargs.get("selection_scope"), bool((keep == keep[:, :1]).all())))
        return keep

    monkeypatch.setattr(R, "select_blocks", spy)
    outs = {}
    for scope in ("per_kv_head", "all_kv_heads"):
        seen.clear()
        R.record_traces(step, reqs, str(tmp_path / f"{scope}.jsonl"), selection_scope=scope,
                        hook=lambda rec, d, s=scope: outs.update({s: d["outputs"]}))
        assert seen and all(sc == scope for sc, _ in seen)
        shared = [same for _, same in seen]
        assert all(shared) if scope == "all_kv_heads" else not all(shared)
    nb = 1024 // 64
    assert outs["per_kv_head"][nb] == outs["all_kv_heads"][nb]
    with pytest.raises(ValueError, match="selection_scope must be 'per_kv_head' or 'all_kv_heads', got 'x'"):
        R.record_traces(step, reqs, str(tmp_path / "x.jsonl"), selection_scope="x")
