"""Natural-text long-context tasks for the second model (byte tokens; spec in docs/model.md).

Tokens: ids 0..255 are bytes; PAD 256, BOS 257, Q 258 (question starts), A 259 (answer starts),
END 260 (answer ends); 261..263 reserved; V = 264.
Every prompt is exactly L tokens: BOS, a haystack window of the corpus (split "train" for
training prompts, "heldout" for eval / trace prompts) with needle lines inserted after newlines
at uniformly random places, then the question `Q ... A <answer prefix>`. The answer prefix
restates the key so that each answer step is a lookup of text that occurs in the prompt.
Keys look like "bavo-42" (consonant-vowel word of 4-5 letters, "-", 2 digits); values are
4-digit numbers. Answers end with END. Quality = greedy exact match of all answer tokens.
"""
import numpy as np

import corpus as C

PAD, BOS, QTOK, ATOK, END = 256, 257, 258, 259, 260
VOCAB_SIZE = 264
TASKS = ["single_qa", "multi_qa", "multi_hop", "aggregation", "multi_value", "lookalike", "sentence_qa"]
LENGTHS = [1024, 2048, 4096, 8192, 16384]
SPLIT_IDS = {"train": 0, "eval": 1, "trace_train": 2, "trace_test": 3, "test": 4}
CONS, VOWS = "bdfgklmnprstvz", "aeiou"


def vocab_dict():
    return {"vocab_size": VOCAB_SIZE, "tokenizer": "bytes",
            "bytes": [0, 255],
            "special": {"PAD": PAD, "BOS": BOS, "Q": QTOK, "A": ATOK, "END": END},
            "reserved": [261, 263],
            "notes": "ids 0..255 are the bytes of the text (the corpus is printable ASCII plus newline); "
                     "Q starts the question, A the answer prefix, END closes an answer"}


def _enc(s):
    return list(s.encode("ascii"))


def _word(rng):
    n = int(rng.integers(4, 6))
    return "".join((CONS if i % 2 == 0 else VOWS)[int(rng.integers(len(CONS if i % 2 == 0 else VOWS)))]
                   for i in range(n))


def _key(rng):
    return f"{_word(rng)}-{int(rng.integers(10))}{int(rng.integers(10))}"


def _keys(rng, n, avoid=()):
    out, seen = [], set(avoid)
    while len(out) < n:
        k = _key(rng)
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def _vals(rng, n):
    return [f"{int(c):04d}" for c in rng.choice(10000, size=n, replace=False)]


def _lookalike(rng, k, avoid):
    """A key that differs from k in one character: a digit, or a letter of the same class."""
    w, d = k.split("-")
    while True:
        if rng.random() < 0.5:
            i = int(rng.integers(2))
            dd = list(d)
            dd[i] = str((int(dd[i]) + int(rng.integers(1, 10))) % 10)
            c = w + "-" + "".join(dd)
        else:
            i = int(rng.integers(len(w)))
            cls = CONS if w[i] in CONS else VOWS
            ch = cls[int(rng.integers(len(cls)))]
            if ch == w[i]:
                continue
            c = w[:i] + ch + w[i + 1:] + "-" + d
        if c not in avoid:
            return c


class Needle:
    """A line inserted into the haystack; `prefix` + `value` is how an answer restates it."""

    def __init__(self, text, prefix, value, segment=None):
        self.text, self.prefix, self.value, self.segment = text, prefix, value, segment


def _code(k, v):
    return Needle(f"The code for {k} is {v}.", f"{k} is ", v)


def _assemble(rng, split, L, query, needles, aux=0, entry=None, on_order=None):
    """Prompt of exactly L tokens. needles with segment=(i, m) go into the i-th of m equal parts.
    entry (sentence task): (start, line length) of a corpus line that must lie inside the window.
    aux (training only): copies "A prefix value END" of random needles, each placed after its
    source. on_order(order of needle indices in the prompt) may rewrite needles in place (same
    lengths) before they are written. Returns prompt, needle starts, [(pos, token)] aux targets."""
    sp = C.load()["heldout" if split != "train" else "train"]
    lines = [_enc(n.text) + [10] for n in needles]
    body = L - 1 - len(query) - sum(len(x) for x in lines)
    auxsrc = []
    if aux:
        pool = list(range(len(needles)))
        auxsrc = [pool[int(rng.integers(len(pool)))] for _ in range(aux)] if pool else []
        body -= sum(len(_enc(needles[i].prefix + needles[i].value)) + 3 for i in auxsrc)
    F = body
    assert F > 64, "context too short"
    N = len(sp.text)
    if entry is not None:
        e0, ell = entry
        lo, hi = max(0, e0 + ell + 1 - F), min(e0, N - F)
        s = int(rng.integers(lo, hi + 1))
    else:
        s = int(rng.integers(0, N - F + 1))
    fill = sp.text[s:s + F].astype(np.int64)

    def snap(o):  # insert after the next newline at or after offset o (else the last one before)
        j = np.searchsorted(sp.newlines, s + o)
        if j < len(sp.newlines) and sp.newlines[j] - s < F:
            return int(sp.newlines[j] - s + 1)
        if j > 0 and sp.newlines[j - 1] >= s:
            return int(sp.newlines[j - 1] - s + 1)
        return F

    ins = []
    for i, n in enumerate(needles):
        if n.segment is None:
            o = int(rng.integers(0, F + 1))
        else:
            a, m = n.segment
            o = int(rng.integers((F * a) // m, (F * (a + 1)) // m + 1))
        ins.append((snap(o), 0, i))
    for j, i in enumerate(auxsrc):
        ins.append((snap(int(rng.integers(ins[i][0], F + 1))), 1, len(needles) + j))
    ins.sort()
    if on_order is not None:
        on_order([i for _, kind, i in ins if kind == 0])
        lines = [_enc(n.text) + [10] for n in needles]
    out = [BOS]
    starts = [0] * len(needles)
    auxt = []
    prev = 0
    for o, kind, i in ins:
        out.extend(fill[prev:o].tolist())
        prev = o
        if kind == 0:
            starts[i] = len(out)
            out.extend(lines[i])
        else:
            n = needles[auxsrc[i - len(needles)]]
            p = _enc(n.prefix)
            v = _enc(n.value) + [END]
            out.append(ATOK)
            out.extend(p)
            auxt.extend((len(out) - 1 + t, tok) for t, tok in enumerate(v))
            out.extend(v)
            out.append(10)
    out.extend(fill[prev:].tolist())
    out.extend(query)
    assert len(out) == L, (len(out), L)
    return out, starts, auxt


def _q(question, prefix):
    return [QTOK] + _enc(question) + [ATOK] + _enc(prefix)


def gen_single_qa(rng, split, L, aux):
    n = 4 + L // 1024
    ks, vs = _keys(rng, n), _vals(rng, n)
    t = int(rng.integers(n))
    nd = [_code(k, v) for k, v in zip(ks, vs)]
    q = _q(f"What is the code for {ks[t]}?", f"{ks[t]} is ")
    pr, st, ax = _assemble(rng, split, L, q, nd, aux)
    return pr, _enc(vs[t]) + [END], [st[t]], ax


def gen_multi_qa(rng, split, L, aux):
    n = 4 + L // 1024
    ks, vs = _keys(rng, n), _vals(rng, n)
    ts = [int(x) for x in rng.choice(n, size=4, replace=False)]
    nd = [_code(k, v) for k, v in zip(ks, vs)]
    q = _q(f"What are the codes for {ks[ts[0]]}, {ks[ts[1]]}, {ks[ts[2]]} and {ks[ts[3]]}?", f"{ks[ts[0]]} is ")
    ans = vs[ts[0]] + "".join(f", {ks[t]} is {vs[t]}" for t in ts[1:])
    pr, st, ax = _assemble(rng, split, L, q, nd, aux)
    return pr, _enc(ans) + [END], [st[t] for t in ts], ax


def gen_multi_hop(rng, split, L, aux):
    nc = 2 + L // 4096
    ks, vs = _keys(rng, 3 * nc), _vals(rng, nc)
    nd = []
    for c in range(nc):
        A, B, Cc = ks[3 * c:3 * c + 3]
        nd += [_code(A, vs[c]), Needle(f"The code for {B} is that of {A}.", f"{B} is ", f"that of {A}"),
               Needle(f"The code for {Cc} is that of {B}.", f"{Cc} is ", f"that of {B}")]
    t = int(rng.integers(nc))
    A, B, Cc = ks[3 * t:3 * t + 3]
    q = _q(f"What is the code for {Cc}?", f"{Cc} is ")
    ans = f"that of {B}, {B} is that of {A}, {A} is {vs[t]}"
    pr, st, ax = _assemble(rng, split, L, q, nd, aux)
    return pr, _enc(ans) + [END], st[3 * t:3 * t + 3], ax


def gen_aggregation(rng, split, L, aux):
    m = int(rng.integers(3, 6))
    ndk = 2 + L // 2048
    ks = _keys(rng, ndk + 1)
    K, dks = ks[0], ks[1:]
    dcnt = [int(c) for c in rng.integers(1, 4, size=ndk)]
    vs = _vals(rng, m + sum(dcnt))
    # distractor ordinals follow the order of appearance: assigned after placement below, so the
    # needles are built with placeholders and rebuilt once the order is known
    items = [(K, vs[j], (j, m)) for j in range(m)]
    vi = m
    for k, c in zip(dks, dcnt):
        for _ in range(c):
            items.append((k, vs[vi], None))
            vi += 1
    nd = [Needle(f"Log {k} #0: {v}.", f"{k} #0: ", v, seg) for k, v, seg in items]

    def ordinals(order):  # occurrence index of each key in order of appearance (1 digit: <= 5)
        seen = {}
        for i in order:
            k, v, _ = items[i]
            seen[k] = seen.get(k, 0) + 1
            nd[i].text, nd[i].prefix = f"Log {k} #{seen[k]}: {v}.", f"{k} #{seen[k]}: "

    q = _q(f"List every log of {K}.", f"{K} #1: ")
    pr, st, ax = _assemble(rng, split, L, q, nd, aux, on_order=ordinals)
    ans = vs[0] + "".join(f", {K} #{j + 1}: {vs[j]}" for j in range(1, m)) + f", {K} #{m + 1}: none"
    return pr, _enc(ans) + [END], st[:m], ax


def gen_multi_value(rng, split, L, aux):
    nmv = 2 + L // 2048
    nsv = 2 + L // 2048
    cnt = [int(c) for c in rng.integers(2, 5, size=nmv)]
    ks = _keys(rng, nmv + nsv)
    vs = _vals(rng, sum(cnt) + nsv)
    nd, lists, vi = [], [], 0
    for i in range(nmv):
        v = vs[vi:vi + cnt[i]]
        vi += cnt[i]
        lst = ", ".join(v[:-1]) + " and " + v[-1]
        lists.append(lst)
        nd.append(Needle(f"The codes for {ks[i]} are {lst}.", f"The codes for {ks[i]} are ", lst))
    for i in range(nsv):
        nd.append(_code(ks[nmv + i], vs[vi + i]))
    t = int(rng.integers(nmv))
    q = _q(f"What are the codes for {ks[t]}?", f"The codes for {ks[t]} are ")
    pr, st, ax = _assemble(rng, split, L, q, nd, aux)
    return pr, _enc(lists[t]) + [END], [st[t]], ax


def gen_lookalike(rng, split, L, aux):
    K = _key(rng)
    la = []
    for _ in range(3):
        la.append(_lookalike(rng, K, set(la) | {K}))
    others = _keys(rng, 1 + L // 2048, avoid=set(la) | {K})
    ks = [K] + la + others
    vs = _vals(rng, len(ks))
    nd = [_code(k, v) for k, v in zip(ks, vs)]
    q = _q(f"What is the code for {K}?", f"{K} is ")
    pr, st, ax = _assemble(rng, split, L, q, nd, aux)
    return pr, _enc(vs[0]) + [END], [st[0]], ax


def gen_sentence_qa(rng, split, L, aux):
    sp = C.load()["heldout" if split != "train" else "train"]
    for _ in range(1000):
        e0, nlen, ell = (int(x) for x in sp.entries[int(rng.integers(len(sp.entries)))])
        name = bytes(sp.text[e0:e0 + nlen]).decode("ascii")
        summ = bytes(sp.text[e0 + nlen + 2:e0 + ell]).decode("ascii")
        q = _q(f"What is {name}?", f"{name}: ")
        pr, st, ax = _assemble(rng, split, L, q, [], 0, entry=(e0, ell))
        body = bytes(pr[1:L - len(q)])
        if body.count((name + ": ").encode()) == 1 and body.count(name.encode()) <= 2:
            return pr, _enc(summ) + [END], [], ax
    raise RuntimeError("no unique entry found")


GENERATORS = {"single_qa": gen_single_qa, "multi_qa": gen_multi_qa, "multi_hop": gen_multi_hop,
              "aggregation": gen_aggregation, "multi_value": gen_multi_value, "lookalike": gen_lookalike,
              "sentence_qa": gen_sentence_qa}


def make_split_example(split, task, L, idx, aux=0):
    """Seeded by (split id, task index, L, idx). aux > 0 (training only) adds recall items."""
    rng = np.random.default_rng([SPLIT_IDS[split], TASKS.index(task), int(L), int(idx)])
    pr, ans, needed, ax = GENERATORS[task](rng, split, int(L), aux)
    ex = {"task": task, "context_length": len(pr), "prompt": pr, "answer": ans, "needed": needed}
    if aux:
        ex["aux_targets"] = ax
    return ex


if __name__ == "__main__":
    for t in TASKS:
        ex = make_split_example("eval", t, 1024, 0)
        p = ex["prompt"]
        show = lambda ids: "".join(chr(i) if i < 256 else f"<{i}>" for i in ids)  # noqa: E731
        print(f"== {t} L={len(p)} answer={show(ex['answer'])!r}\n  tail {show(p[-90:])!r}")
