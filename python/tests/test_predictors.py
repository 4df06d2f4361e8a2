"""Predictors and probe statistics from Python."""
import json
from pathlib import Path

import numpy as np
import pytest

import sparsebudget as sb


def test_fixed_predictor_round_trip(tmp_path):
    p = sb.predictor_from_json(json.dumps({"schema_version": 1, "type": "fixed", "fraction": 0.25}))
    assert p.type == "fixed"
    r = p.predict({"context_length": 4096, "block_size": 64, "task": "single_qa"})
    assert r["causal_blocks"] == 64
    assert r["budget"].mode == "fraction"
    assert r["total_blocks"] == r["budget"].resolve(64)["total_blocks"]
    path = tmp_path / "p.json"
    p.save(str(path))
    assert sb.load_predictor(str(path)).to_json() == p.to_json()
    assert "length_law" in sb.predictor_types()


def test_predictor_errors(tmp_path):
    with pytest.raises(ValueError, match="fraktion"):
        sb.predictor_from_json('{"schema_version": 1, "type": "fixed", "fraction": 0.5, "fraktion": 1}')
    with pytest.raises((FileNotFoundError, OSError)):
        sb.load_predictor(str(tmp_path / "missing.json"))
    p = sb.predictor_from_json('{"schema_version": 1, "type": "fixed", "fraction": 0.5}')
    with pytest.raises(ValueError, match="context_lengthh"):
        p.predict({"context_length": 10, "context_lengthh": 10})
    with pytest.raises(TypeError):
        p.predict(42)


def test_probe_stats_and_budget_from_prediction():
    rng = np.random.default_rng(1)
    k = rng.standard_normal((512, 2, 64), dtype=np.float32)
    q = rng.standard_normal((1, 4, 64), dtype=np.float32)
    s = sb.BlockSummaries(2, 64, block_size=64, max_tokens=512)
    s.append(k)
    st = sb.probe_stats(q[0], s)
    assert st["num_blocks"] == 8
    assert 1 <= st["blocks_50"] <= st["blocks_90"] <= st["blocks_99"] <= 8
    p = sb.predictor_from_json('{"schema_version": 1, "type": "probe"}')
    r = p.predict({"context_length": 512, "block_size": 64, "probe_blocks_90": st["blocks_90"]})
    out = sb.attention(q, k, k, block_size=64, budget=r["budget"], summaries=s)
    assert np.isfinite(out).all()


TRACES = Path(__file__).resolve().parents[2] / "data" / "synthetic" / "train.jsonl"


@pytest.mark.skipif(not TRACES.exists(), reason="bundled synthetic traces not present")
def test_fit_and_calibrate_on_bundled_traces():
    p = sb.fit_predictor("length_law", str(TRACES))
    assert p.type == "length_law"
    r = sb.calibrate("length_law", str(TRACES), target_degraded=0.1)
    assert r["predictor"].type == "cells"  # every fitted type is calibrated per cell
    assert r["method"] == "cells+crc"
    assert 0 < r["holdout_mean_fraction"] <= 1
    assert r["holdout_miss_share"] <= 0.1 + 1e-12 or r["num_holdout"] < 20
    with pytest.raises(ValueError):
        sb.calibrate("length_law", str(TRACES))  # no target


def test_calibrate_auto_label_free_and_escalation_policy():
    r = sb.calibrate("auto", str(TRACES), target_degraded=0.1)
    assert r["predictor"].type == "cells"
    assert r["signal"]  # what auto chose, e.g. "feature:probe_blocks_90 buckets=4"
    assert "cv mean budget fraction" in r["selection"]
    assert sb.escalation_policy(r["predictor"]) is None
    p = sb.EscalationPolicy(0.5, [0.125, 0.5, 1.0])
    assert p.step(4, 64, 0.9) == {"action": "continue", "total_blocks": 4}
    assert p.step(4, 64, 0.2) == {"action": "recompute", "total_blocks": 8}
    # the rung as the budget the redone step runs at: exactly its blocks, whatever the limits
    b = sb.Budget.of_total(8, 64, sink_blocks=1, local_blocks=2)
    assert b.mode == "fraction" and b.max_blocks == 8
    assert b.resolve(64)["total_blocks"] == 8
    assert sb.Budget.of_total(64, 64).mode == "dense"
    with pytest.raises(ValueError, match="total_blocks"):
        sb.Budget.of_total(-1, 64)
    with pytest.raises(ValueError, match="causal_blocks"):
        sb.Budget.of_total(3, 0)
    rp = sb.EscalationPolicy(0.5, [0.125, 0.5, 1.0], mode="restart_answer")
    assert rp.step(8, 64, 0.2, answer_position=3)["action"] == "restart"
    fp = sb.EscalationPolicy(0.5, [0.125, 0.5, 1.0], mode="first_token")
    assert fp.mode == "first_token"
    assert fp.step(4, 64, 0.2, answer_position=3)["action"] == "continue"
    assert fp.step(4, 64, 0.2, answer_position=0) == {"action": "recompute", "total_blocks": 8}
    with pytest.raises(ValueError):
        sb.EscalationPolicy(0.5, [0.5, 0.25])
    with pytest.raises(ValueError):
        sb.EscalationPolicy(0.5, [1.0], mode="sideways")
