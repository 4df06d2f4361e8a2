"""The C++ runner's dense logits against PyTorch's (Debian python3-torch, CPU, fp32) on the
same weights. First model (data/model): 100 prompts (25 per task at 512 and 1024 tokens, held-out
seeds). Second model (data/model_nl, --natural; 13.5M parameters, so fewer prompts to stay fast on 2
cores): 8 prompts (1 per task at 1024 tokens, 1 at 2048; split "test", which no trace or training
prompt uses).
Prints the max |diff| and asserts identical argmax on every prompt.

    /usr/bin/python3 examples/model/check_vs_torch.py BUILD/examples/model/tiny_model_logits [--natural]
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import model as M  # noqa: E402
import tasks as T  # noqa: E402


def main():
    exe = sys.argv[1]
    natural = "--natural" in sys.argv[2:]
    mdir = os.path.join(ROOT, "data", "model_nl" if natural else "model")
    prompts = []
    if natural:
        import tasks_nl as N
        for task in N.TASKS:
            prompts.append(list(map(int, N.make_split_example("test", task, 1024, 0)["prompt"])))
        prompts.append(list(map(int, N.make_split_example("test", "lookalike", 2048, 0)["prompt"])))
    else:
        for ti, task in enumerate(T.TASKS):
            for L in (512, 1024):
                # 5 prompts per task and length (40 in all): every task and both lengths, in a
                # third of the time 25 per task took (97 s of make test's CPU).
                for i in range(5):
                    ex = T.make_example(task, L, [777, ti, L, i])
                    prompts.append(list(map(int, ex["prompt"])))
    torch.manual_seed(0)
    net = M.load_model(os.path.join(mdir, "model.safetensors"), os.path.join(mdir, "config.json"), "cpu").float()
    with tempfile.TemporaryDirectory() as tmp:
        pf = os.path.join(tmp, "prompts.jsonl")
        with open(pf, "w") as f:
            for p in prompts:
                f.write(json.dumps(p) + "\n")
        out = os.path.join(tmp, "logits.npy")
        subprocess.run([exe, mdir, pf, out], check=True)
        ours = np.load(out)
    worst, same = 0.0, 0
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ref = net(torch.tensor([p]))[0, -1].double().numpy()
            worst = max(worst, float(np.abs(ref - ours[i]).max()))
            same += int(np.argmax(ref) == np.argmax(ours[i]))
    print(f"{os.path.basename(mdir)}: prompts {len(prompts)}, argmax identical {same}/{len(prompts)}, max |logit diff| {worst:.3e}")
    assert same == len(prompts), "argmax differs"
    assert worst < 1e-2, "logits differ too much"


if __name__ == "__main__":
    main()
