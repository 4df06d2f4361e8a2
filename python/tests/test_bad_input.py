"""Hostile input through the Python module (issue 12): each test reproduces a defect an independent
suite found - a crash, a hang, a wrong exception or a silently wrong answer - and checks the
documented behaviour instead. Shape errors are ValueError, dtype errors TypeError, resource
failures RuntimeError; no call crashes the interpreter."""
import os
import subprocess
import sys

import numpy as np
import pytest

import sparsebudget as sb


def qkv(nq=1, hq=4, hkv=2, d=16, L=100, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, hq, d), dtype=np.float32)
    k = rng.standard_normal((L, hkv, d), dtype=np.float32)
    v = rng.standard_normal((L, hkv, d), dtype=np.float32)
    return q, k, v


def run_child(code):
    """Runs `code` in a fresh interpreter (a crash there cannot take pytest down)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


# Defect 3: non-array selection elements were used as arrays (segfault).
@pytest.mark.parametrize("selection", [(1, 2), (None, None), ("ab", b"cd"), (1.5, [1, 2])])
def test_selection_of_non_arrays_is_a_type_error(selection):
    q, k, v = qkv()
    with pytest.raises(TypeError, match="selection"):
        sb.attention(q, k, k, block_size=16, selection=selection)


def test_selection_of_non_arrays_does_not_crash_the_interpreter():
    r = run_child("import numpy as np, sparsebudget as sb\n"
                  "q = np.zeros((1, 4, 16), np.float32); k = np.zeros((100, 2, 16), np.float32)\n"
                  "try:\n    sb.attention(q, k, k, block_size=16, selection=(1, 2))\n"
                  "except TypeError as e:\n    print('TypeError', e)\n")
    assert r.returncode == 0, f"child died with {r.returncode}: {r.stderr[-2000:]}"
    assert "TypeError" in r.stdout


def test_selection_not_a_tuple_is_a_type_error():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="selection"):
        sb.attention(q, k, v, block_size=16, selection=5)


# Defect 4: num_threads beyond what a pool may have started that many threads (or hung).
# Run in a child whose address space is limited, so a regression fails after a few threads
# instead of starting 100,000 on a shared machine.
LIMIT_AS = (
    "import resource\n"
    "pages = int(open('/proc/self/statm').read().split()[0])\n"
    "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
    "resource.setrlimit(resource.RLIMIT_AS, (pages * resource.getpagesize() + (40 << 20), hard))\n")


@pytest.mark.parametrize("n", [4097, 100000, 2**31 - 1])
def test_num_threads_above_the_cap_is_a_value_error(n):
    code = ("import numpy as np, sparsebudget as sb\n"
            "q = np.zeros((1, 4, 16), np.float32); k = np.ones((100, 2, 16), np.float32)\n"
            "sb.attention(q, k, k, block_size=16)\n" + LIMIT_AS +
            "try:\n"
            f"    sb.attention(q, k, k, block_size=16, num_threads={n})\n"
            "    print('accepted')\n"
            "except ValueError as e:\n"
            "    print('ValueError', e)\n"
            "except RuntimeError as e:\n"
            "    print('RuntimeError', e)\n")
    r = run_child(code)
    assert r.returncode == 0, f"child died with {r.returncode}: {r.stderr[-2000:]}"
    assert "ValueError" in r.stdout and str(n) in r.stdout, r.stdout + r.stderr


def test_threads_that_cannot_start_raise_instead_of_hanging():
    # The child limits its address space so only a few thread stacks fit, then asks for 64 threads
    # (never more: the machine is shared). Before the fix the pool's cleanup never returned.
    code = (
        "import numpy as np, sparsebudget as sb\n"
        "q = np.zeros((1, 4, 16), np.float32); k = np.ones((100, 2, 16), np.float32)\n"
        "sb.attention(q, k, k, block_size=16)\n" + LIMIT_AS +
        "try:\n"
        "    sb.attention(q, k, k, block_size=16, num_threads=64)\n"
        "    print('started all')\n"
        "except RuntimeError as e:\n"
        "    print('RuntimeError', e)\n")
    r = run_child(code)
    assert r.returncode == 0, f"child died with {r.returncode}: {r.stderr[-2000:]}"
    assert "RuntimeError" in r.stdout and "could not start worker" in r.stdout, r.stdout + r.stderr


# Defect 10: the documented no-op, a dtype error reported as a shape error, a truncated shape.
def test_zero_queries_is_a_no_op():
    _, k, v = qkv()
    q = np.zeros((0, 4, 16), np.float32)
    out = sb.attention(q, k, v, block_size=16)
    assert out.shape == (0, 4, 16)
    out2 = sb.attention(q, k, v, block_size=16, out=np.empty((0, 4, 16), np.float32))
    assert out2.shape == (0, 4, 16)


def test_v_dtype_differing_from_k_is_a_type_error():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="dtype"):
        sb.attention(q, k, v.astype(np.float16), block_size=16)
    with pytest.raises(TypeError, match="dtype"):
        sb.attention(q, k.astype(np.float16), v, block_size=16)


def test_dimension_beyond_int32_is_rejected_not_truncated():
    _, k, v = qkv()
    base = np.zeros((1, 4, 16), np.float32)
    n = 2**32 + 1  # cast to int32 this is 1 query, which "succeeded"
    q = np.lib.stride_tricks.as_strided(base, shape=(n, 4, 16), strides=(0, 64, 4))
    with pytest.raises(ValueError, match=str(n)):
        sb.attention(q, k, v, block_size=16, context_length=100)
    with pytest.raises(ValueError, match=str(n)):
        sb.select_blocks(q, sb.BlockSummaries(2, 16, block_size=16, max_tokens=100), budget="blocks")
    heads = np.lib.stride_tricks.as_strided(base, shape=(1, n, 16), strides=(0, 0, 4))
    with pytest.raises(ValueError, match=str(n)):
        sb.attention(heads, k, v, block_size=16)


def test_probe_stats_with_more_than_int32_heads_is_rejected():
    s = sb.BlockSummaries(2, 16, block_size=16, max_tokens=100)
    _, k, _ = qkv()
    s.append(k)
    base = np.zeros((1, 16), np.float32)
    q = np.lib.stride_tricks.as_strided(base, shape=(2**32 + 2, 16), strides=(0, 4))
    with pytest.raises(ValueError):
        sb.probe_stats(q, s)


# Found with the engine binding: a byte-swapped array ('>f4' on x86) was read as native floats, a
# silently wrong answer (k/v values of 1e38, an error of 2 in q). Every array check now rejects it.
def test_byte_swapped_arrays_are_a_type_error():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="q must be in the machine's byte order, got >f4"):
        sb.attention(q.astype(">f4"), k, v, block_size=16)
    with pytest.raises(TypeError, match="k/v must be in the machine's byte order"):
        sb.attention(q, k.astype(">f4"), k.astype(">f4"), block_size=16)
    with pytest.raises(TypeError, match="k/v must be in the machine's byte order"):
        sb.attention(q, k.astype(">f2"), k.astype(">f2"), block_size=16)
    pages = k[:96].reshape(6, 16, 2, 16)
    with pytest.raises(TypeError, match="page_table must be in the machine's byte order"):
        sb.attention(q, pages, pages, block_size=16, page_table=np.arange(6, dtype=">i4"))
    with pytest.raises(TypeError, match="byte order"):
        sb.logit_stats(np.zeros(10, ">f4"))
    # native arrays, spelled explicitly, still work
    np.testing.assert_array_equal(sb.attention(q.astype("=f4"), k.astype("<f4"), v, block_size=16),
                                  sb.attention(q, k, v, block_size=16))


# Defect 2: a predictor nested 100,000 deep crashed the interpreter (stack overflow).
def test_deeply_nested_predictor_is_a_value_error(tmp_path):
    text = '{"schema_version": 1, "type": "clamp", "member": ' * 100000
    text += '{"schema_version": 1, "type": "length_law"}' + "}" * 100000
    with pytest.raises(ValueError, match="deeper"):
        sb.predictor_from_json(text)
    p = tmp_path / "deep.json"
    p.write_text(text)
    with pytest.raises(ValueError, match="deeper"):
        sb.load_predictor(str(p))


# Defect 8: a directory is an OSError (I/O), not a parse error.
def test_loading_a_directory_is_an_os_error(tmp_path):
    with pytest.raises(OSError, match="directory"):
        sb.load_predictor(str(tmp_path))


# Defect 9: duplicate keys were accepted (the last one won).
def test_duplicate_keys_are_rejected():
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        sb.predictor_from_json('{"schema_version": 1, "type": "length_law", "a": 0.5, "a": 0.9}')
    p = sb.predictor_from_json('{"schema_version": 1, "type": "length_law"}')
    with pytest.raises(ValueError, match="duplicate key 'context_length'"):
        p.predict('{"context_length": 100, "context_length": 5}')


# Defect 6: context_length INT64_MAX overflowed the block count (negative causal_blocks, "ok").
def test_predict_at_int64_max_has_consistent_counts():
    p = sb.predictor_from_json('{"schema_version": 1, "type": "length_law"}')
    r = p.predict({"context_length": 2**63 - 1, "block_size": 64})
    assert r["causal_blocks"] == (2**63 - 1) // 64 + 1
    assert 1 <= r["total_blocks"] <= r["causal_blocks"]
    assert 0.0 <= r["fraction"] <= 1.0
    b = sb.Budget.of_blocks(5)
    assert b.resolve(2**63 - 1)["total_blocks"] == 7
