import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks as T  # noqa: E402
import train  # noqa: E402
from model import load_model, load_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def test_smoke_train(tmp_path):
    train.main(["--smoke", "--out", str(tmp_path)])
    assert (tmp_path / "train.log").exists()
    w = load_safetensors(str(tmp_path / "model.safetensors"))
    assert w["tok_emb.weight"].shape == (T.VOCAB_SIZE, 256)
    assert w["layers.3.w_down.weight"].shape == (256, 768)
    assert len(w) == 2 + 4 * 9


def test_shipped_model_files():
    p = os.path.join(ROOT, "data", "model", "model.safetensors")
    if not os.path.exists(p):
        return
    cfg = json.load(open(os.path.join(ROOT, "data", "model", "config.json")))
    assert cfg["vocab_size"] == T.VOCAB_SIZE and cfg["n_layers"] == 4
    assert os.path.getsize(p) < 20 * 2 ** 20
    cc = json.load(open(os.path.join(ROOT, "data", "traces", "crosscheck.json")))
    m = load_model(p, os.path.join(ROOT, "data", "model", "config.json"))
    r = cc["requests"][0]
    with torch.no_grad():
        lg = m(torch.tensor([r["prompt"]]))[0, -1].numpy()
    assert int(lg.argmax()) == r["dense_argmax"]
    assert np.allclose(lg[:16], r["dense_logits_first16"], atol=2e-3)


def test_smoke_train_natural(tmp_path):
    # the natural suite's code path (byte tasks, LM + answer loss, GQA) on a narrow model
    import tasks_nl as N
    train.main(["--smoke", "--suite", "natural", "--out", str(tmp_path)])
    log = (tmp_path / "train.log").read_text()
    assert " lm " in log  # the language-modelling term is part of the loss
    w = load_safetensors(str(tmp_path / "model.safetensors"))
    assert w["tok_emb.weight"].shape == (N.VOCAB_SIZE, 128)
    assert w["layers.1.wq.weight"].shape == (8 * 16, 128) and w["layers.1.wk.weight"].shape == (2 * 16, 128)
    assert len(w) == 2 + 2 * 9


def test_shipped_natural_model_files():
    d = os.path.join(ROOT, "data", "model_nl")
    p = os.path.join(d, "model.safetensors")
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert (cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]) == (6, 8, 2, 64)
    assert os.path.getsize(p) < 40 * 2 ** 20
    cc = json.load(open(os.path.join(ROOT, "data", "traces_nl", "crosscheck.json")))
    m = load_model(p, os.path.join(d, "config.json"))
    r = cc["requests"][0]
    with torch.no_grad():
        lg = m(torch.tensor([r["prompt"]]))[0, -1].numpy()
    assert int(lg.argmax()) == r["dense_argmax"]
    assert np.allclose(lg[:16], r["dense_logits_first16"], atol=2e-3)
