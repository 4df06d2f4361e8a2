"""Seeded long-context task generator (numpy only).

Four tasks, each producing (prompt, answer) as lists of int token ids.
Prompt length equals the requested context length exactly.

Vocabulary (V = 800):
    0        PAD
    1        BOS
    2        REC      record marker "[R]"
    3        SEP      ":" (key/value separator; also separates hops in multi_hop answers)
    4        QUERY    "[Q]"
    5        END      end of an aggregation answer
    6        T_SINGLE task tag (single_qa)
    7        T_MULTI  task tag (multi_qa)
    8        T_HOP    task tag (multi_hop)
    9        T_AGG    task tag (aggregation)
    10..15   reserved (never generated)
    16..31   ORD      occurrence ordinals "#1".."#16" (ORD_BASE + n - 1 is "#n")
    32..159  KEY      key / variable-name tokens (128); keys are 2 tokens
    160..287 VAL      value tokens (128); values are 2 tokens
    288..799 FILLER   random filler tokens (512)

Formats (k1 k2 = 2-token key, v1 v2 = 2-token value):
    record (single_qa, multi_qa, multi_hop):  REC k1 k2 SEP v1 v2
    record (aggregation prompts):             REC k1 k2 ORD(n) v1 v2   (n = occurrence index of
                                                                        that key in the prompt, 1-based)
    prompt = BOS, filler with records inserted at random places, then the query (prompt ends with
    the query).  Queries / answers:
    single_qa:   T_SINGLE QUERY k1 k2 SEP                  -> v1 v2
    multi_qa:    T_MULTI QUERY a1 a2 b1 b2 c1 c2 d1 d2 SEP -> va1 va2 vb1 vb2 vc1 vc2 vd1 vd2
    multi_hop:   T_HOP QUERY C1 C2 SEP                     -> B1 B2 SEP A1 A2 SEP v1 v2
                 (records "A : v", "B : A", "C : B" scattered in any order, plus distractor chains;
                  the answer spells out the chain C -> B -> A -> v, the value last)
    aggregation: T_AGG QUERY K1 K2 ORD(1) -> x1 x2 K1 K2 ORD(2) y1 y2 K1 K2 ORD(3) z1 z2 ... K1 K2 ORD(m+1) END
                 (the key K occurs in m = 3..5 records, one per equal segment of the context;
                  answer = all its values in order of appearance, each later one introduced by
                  "K1 K2 ORD(j)", closed by "K1 K2 ORD(m+1) END"; answer length 5m+1)
"""
import numpy as np

PAD, BOS, REC, SEP, QUERY, END = 0, 1, 2, 3, 4, 5
T_SINGLE, T_MULTI, T_HOP, T_AGG = 6, 7, 8, 9
ORD_BASE, N_ORD = 16, 16
KEY_BASE, N_KEY = 32, 128
VAL_BASE, N_VAL = 160, 128
FILL_BASE, N_FILL = 288, 512
VOCAB_SIZE = 800

TASKS = ["single_qa", "multi_qa", "multi_hop", "aggregation"]
LENGTHS = [512, 1024, 2048, 4096, 8192]
SPLIT_IDS = {"train": 0, "eval": 1, "trace_train": 2, "trace_test": 3, "test": 4}
REC_LEN = 6


def vocab_dict():
    return {
        "vocab_size": VOCAB_SIZE,
        "special": {"PAD": PAD, "BOS": BOS, "REC": REC, "SEP": SEP, "QUERY": QUERY, "END": END,
                    "T_SINGLE": T_SINGLE, "T_MULTI": T_MULTI, "T_HOP": T_HOP, "T_AGG": T_AGG},
        "ranges": {
            "reserved": [10, 15],
            "ORD": [ORD_BASE, ORD_BASE + N_ORD - 1],
            "KEY": [KEY_BASE, KEY_BASE + N_KEY - 1],
            "VAL": [VAL_BASE, VAL_BASE + N_VAL - 1],
            "FILLER": [FILL_BASE, FILL_BASE + N_FILL - 1],
        },
        "notes": "ranges are inclusive; ORD_BASE+n-1 is ordinal #n; keys and values are 2 tokens each",
    }


def _distinct_pairs(rng, n, base, size):
    """n distinct 2-token tuples from [base, base+size)."""
    codes = rng.choice(size * size, size=n, replace=False)
    return [(base + int(c // size), base + int(c % size)) for c in codes]


def _assemble(rng, L, query, records, seg_records=None, aux=0):
    """Build a prompt of exactly L tokens.

    records: list of (token list) placed at uniform random filler offsets.
    seg_records: list of token lists; record i is placed in the i-th of len(seg_records)
                 equal segments of the filler offsets (scattered over the whole context).
    aux (training only): number of extra in-context recall items "QUERY k1 k2 MID v1 v2", each a
                 copy of a random record placed somewhere after it (loss on its last 2 tokens).
    Returns (prompt, starts, aux_items) where starts[i] is the start position of record i
    (records first, then seg_records) and aux_items = [(start, source record index)].
    """
    seg_records = seg_records or []
    allrec = list(records) + list(seg_records)
    nrec = len(allrec)
    auxsrc = []
    if aux:
        auxsrc = [int(x) for x in rng.integers(0, nrec, size=aux)]
        allrec = allrec + [[QUERY] + list(allrec[i][1:]) for i in auxsrc]
    body = L - 1 - len(query)
    F = body - sum(len(r) for r in allrec)
    assert F > 0, "context too short"
    offs = list(rng.integers(0, F + 1, size=len(records)))
    m = len(seg_records)
    for i in range(m):
        lo, hi = (F * i) // m, (F * (i + 1)) // m
        offs.append(int(rng.integers(lo, hi + 1)))
    for i in auxsrc:
        offs.append(int(rng.integers(offs[i], F + 1)))
    order = sorted(range(len(allrec)), key=lambda i: (offs[i], i))
    filler = rng.integers(FILL_BASE, FILL_BASE + N_FILL, size=F)
    out = [BOS]
    starts = [0] * len(allrec)
    prev = 0
    for i in order:
        o = offs[i]
        out.extend(filler[prev:o].tolist())
        prev = o
        starts[i] = len(out)
        out.extend(allrec[i])
    out.extend(filler[prev:].tolist())
    out.extend(query)
    assert len(out) == L
    return out, starts[:nrec], list(zip(starts[nrec:], auxsrc))


def _rec(k, v, mid=SEP):
    return [REC, k[0], k[1], mid, v[0], v[1]]


def gen_single_qa(rng, L, aux=0):
    n = 4 + L // 256
    keys = _distinct_pairs(rng, n, KEY_BASE, N_KEY)
    vals = _distinct_pairs(rng, n, VAL_BASE, N_VAL)
    q = int(rng.integers(n))
    query = [T_SINGLE, QUERY, keys[q][0], keys[q][1], SEP]
    prompt, starts, ax = _assemble(rng, L, query, [_rec(k, v) for k, v in zip(keys, vals)], aux=aux)
    return prompt, [vals[q][0], vals[q][1]], {"needed": [starts[q]], "aux": ax}


def gen_multi_qa(rng, L, aux=0):
    n = 4 + L // 256
    keys = _distinct_pairs(rng, n, KEY_BASE, N_KEY)
    vals = _distinct_pairs(rng, n, VAL_BASE, N_VAL)
    qs = [int(x) for x in rng.choice(n, size=4, replace=False)]
    query = [T_MULTI, QUERY] + [t for q in qs for t in keys[q]] + [SEP]
    prompt, starts, ax = _assemble(rng, L, query, [_rec(k, v) for k, v in zip(keys, vals)], aux=aux)
    ans = [t for q in qs for t in vals[q]]
    return prompt, ans, {"needed": [starts[q] for q in qs], "aux": ax}


def gen_multi_hop(rng, L, aux=0):
    nchains = 2 + L // 1024
    names = _distinct_pairs(rng, 3 * nchains, KEY_BASE, N_KEY)
    vals = _distinct_pairs(rng, nchains, VAL_BASE, N_VAL)
    records = []
    for c in range(nchains):
        A, B, C = names[3 * c], names[3 * c + 1], names[3 * c + 2]
        records += [_rec(A, vals[c]), _rec(B, A), _rec(C, B)]
    t = int(rng.integers(nchains))
    A, B, C = names[3 * t], names[3 * t + 1], names[3 * t + 2]
    query = [T_HOP, QUERY, C[0], C[1], SEP]
    prompt, starts, ax = _assemble(rng, L, query, records, aux=aux)
    ans = [B[0], B[1], SEP, A[0], A[1], SEP, vals[t][0], vals[t][1]]
    return prompt, ans, {"needed": starts[3 * t:3 * t + 3], "aux": ax}


def gen_aggregation(rng, L, aux=0):
    m = int(rng.integers(3, 6))
    nd = 2 + L // 512
    keys = _distinct_pairs(rng, nd + 1, KEY_BASE, N_KEY)
    K, dkeys = keys[0], keys[1:]
    dcounts = [int(c) for c in rng.integers(1, 4, size=nd)]
    nvals = m + sum(dcounts)
    vals = _distinct_pairs(rng, nvals, VAL_BASE, N_VAL)
    # placeholders: ordinal filled after placement (order of appearance)
    drecs, dkey_of = [], []
    vi = m
    for k, c in zip(dkeys, dcounts):
        for _ in range(c):
            drecs.append(_rec(k, vals[vi], mid=-1))
            dkey_of.append(k)
            vi += 1
    trecs = [_rec(K, vals[i], mid=-1) for i in range(m)]
    query = [T_AGG, QUERY, K[0], K[1], ORD_BASE]
    prompt, starts, ax = _assemble(rng, L, query, drecs, trecs, aux=aux)
    # assign ordinals by order of appearance per key
    allkeys = dkey_of + [K] * m
    seen = {}
    for i in sorted(range(len(starts)), key=lambda i: starts[i]):
        k = allkeys[i]
        seen[k] = seen.get(k, 0) + 1
        prompt[starts[i] + 3] = ORD_BASE + seen[k] - 1
    for a, i in ax:
        prompt[a + 3] = prompt[starts[i] + 3]
    tstarts = starts[len(drecs):]  # already in order of appearance (segments)
    ans = [prompt[tstarts[0] + 4], prompt[tstarts[0] + 5]]
    for j, s in enumerate(tstarts[1:], start=1):
        ans += [K[0], K[1], ORD_BASE + j, prompt[s + 4], prompt[s + 5]]
    ans += [K[0], K[1], ORD_BASE + m, END]
    return prompt, ans, {"needed": list(tstarts), "aux": ax}


GENERATORS = {"single_qa": gen_single_qa, "multi_qa": gen_multi_qa,
              "multi_hop": gen_multi_hop, "aggregation": gen_aggregation}


def make_rng(split, task, L, idx):
    return np.random.default_rng([SPLIT_IDS[split] if isinstance(split, str) else int(split),
                                  TASKS.index(task), int(L), int(idx)])


def make_example(task, L, seed, aux=0):
    """seed: int or sequence of ints (passed to np.random.default_rng).
    Returns dict(task, context_length, prompt, answer, needed) with needed = start positions
    of the records (REC_LEN tokens each) required to answer."""
    rng = np.random.default_rng(seed)
    prompt, ans, meta = GENERATORS[task](rng, int(L), aux=aux)
    ex = {"task": task, "context_length": len(prompt), "prompt": prompt, "answer": ans,
          "needed": meta["needed"]}
    if aux:
        # (position, target) pairs: predict the 2 value tokens of each in-context recall item
        ex["aux_targets"] = [(a + 3 + j, prompt[a + 4 + j]) for a, _ in meta["aux"] for j in range(2)]
    return ex


def make_split_example(split, task, L, idx, aux=0):
    return make_example(task, L, [SPLIT_IDS[split], TASKS.index(task), int(L), int(idx)], aux=aux)


def answer_length(ex):
    return len(ex["answer"])


def check_aggregation_random_blocks(lengths=LENGTHS, n_prompts=200, trials=50, block=64,
                                    frac=0.10, split="eval", seed=12345):
    """For aggregation prompts, choose ceil-rounded 10% of the 64-token blocks of the prompt
    at random (at least 1 block) and test whether the chosen blocks contain every token of
    every record needed for the answer.  Returns {L: fraction of (prompt, trial) pairs that
    succeed}.  The answer cannot be read unless all needed records are visible, so this
    fraction upper-bounds the success rate of a random 10% block selection."""
    rng = np.random.default_rng(seed)
    res = {}
    for L in lengths:
        hits = 0
        tot = 0
        for i in range(n_prompts):
            ex = make_split_example(split, "aggregation", L, i)
            nb = (len(ex["prompt"]) + block - 1) // block
            kb = max(1, int(round(frac * nb)))
            need = set()
            for s in ex["needed"]:
                for p in range(s, s + REC_LEN):
                    need.add(p // block)
            for _ in range(trials):
                chosen = set(rng.choice(nb, size=kb, replace=False).tolist())
                hits += need <= chosen
                tot += 1
        res[L] = hits / tot
    return res


if __name__ == "__main__":
    import sys
    for t in TASKS:
        ex = make_split_example("eval", t, 512, 0)
        print(t, ex["context_length"], "query", ex["prompt"][-10:], "answer", ex["answer"])
    print("aggregation random 10% blocks success:", check_aggregation_random_blocks(n_prompts=50, trials=20))
    sys.exit(0)
