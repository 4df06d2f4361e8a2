"""Build the natural-text corpus for the second model from English text Debian ships.

    /usr/bin/python3 tools/corpus/build_corpus.py --out data/corpus/corpus.txt.xz

Sources (read on the machine that runs the script; the package list and /usr/share/doc differ
between machines, so the shipped file, not a rebuild, is the reference; its SHA-256 is in
data/corpus/README.md):
  1. `apt-cache dumpavail`: one document per package name, "NAME: SUMMARY\n" then the long
     description (continuation lines unindented, " ." as an empty line). A deterministic subset
     (packages whose sha256(name) falls below a threshold) keeps the size near --package-bytes.
  2. /usr/share/common-licenses/* (each file once, symlinks skipped).
  3. /usr/share/doc/*/README*, *.txt, *.md (gzip read through), at most --doc-file-bytes each,
     --doc-bytes in all, in path order.
Text is reduced to printable ASCII plus newline (NFKD, other characters dropped, tabs to one
space, runs of blank lines to one). Documents are separated by the byte 0x1e and ordered by
sha256 of their text. A document is "heldout" (haystacks of eval and trace prompts) when the first
byte of that hash is < 26 (about 10 %), else "train" (training haystacks and the LM objective):
the split is recomputed from the text by tools/train/corpus.py, so it needs no extra file.
"""
import argparse
import glob
import gzip
import hashlib
import lzma
import os
import re
import subprocess
import sys
import unicodedata

SEP = "\x1e"


def clean(text):
    text = unicodedata.normalize("NFKD", text)
    text = text.replace("\t", " ").replace("\r", "")
    text = "".join(ch for ch in text if ch == "\n" or " " <= ch <= "~")
    lines = [ln.rstrip() for ln in text.split("\n")]
    out, blank = [], True
    for ln in lines:
        if not ln.strip():
            if not blank:
                out.append("")
            blank = True
            continue
        out.append(ln)
        blank = False
    return "\n".join(out).strip("\n")


def packages(max_bytes):
    raw = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True).stdout
    raw = raw.decode("utf-8", "replace")
    docs = {}
    for stanza in raw.split("\n\n"):
        name, desc = None, None
        lines = stanza.split("\n")
        for i, ln in enumerate(lines):
            if ln.startswith("Package: "):
                name = ln[9:].strip()
            elif ln.startswith("Description: ") or ln.startswith("Description-en: "):
                body = [ln.split(": ", 1)[1].strip()]
                for c in lines[i + 1:]:
                    if not c.startswith(" "):
                        break
                    body.append("" if c.strip() == "." else c[1:])
                desc = body
        if not name or not desc or name in docs:
            continue
        docs[name] = clean(name + ": " + desc[0] + "\n" + "\n".join(desc[1:]))
    names = sorted(docs, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    out, total = [], 0
    for n in names:  # first by hash order until the byte budget is reached (a seeded subset)
        d = docs[n]
        if total + len(d) > max_bytes:
            continue
        out.append(d)
        total += len(d) + 1
    return out, len(docs)


def licenses():
    out = []
    for p in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        out.append(clean(open(p, encoding="utf-8", errors="replace").read()))
    return out


def docs(file_bytes, max_bytes):
    pats = ["README*", "*.txt", "*.md", "*.txt.gz", "*.md.gz"]
    paths = set()
    for pat in pats:
        paths.update(glob.glob("/usr/share/doc/*/" + pat))
    out, total, seen = [], 0, set()
    for p in sorted(paths):
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        try:
            raw = gzip.open(p).read() if p.endswith(".gz") else open(p, "rb").read()
        except OSError:
            continue
        t = clean(raw.decode("utf-8", "replace"))[:file_bytes]
        h = hashlib.sha256(t.encode()).digest()
        if len(t) < 200 or h in seen or total + len(t) > max_bytes:
            continue
        seen.add(h)
        out.append(t)
        total += len(t) + 1
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/corpus/corpus.txt.xz")
    ap.add_argument("--package-bytes", type=int, default=6_000_000)
    ap.add_argument("--doc-bytes", type=int, default=4_000_000)
    ap.add_argument("--doc-file-bytes", type=int, default=32_768)
    a = ap.parse_args(argv)
    pk, npk = packages(a.package_bytes)
    li = licenses()
    dc = docs(a.doc_file_bytes, a.doc_bytes)
    alldocs = [d for d in pk + li + dc if d]
    alldocs = sorted(set(alldocs), key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    text = SEP.join(alldocs)
    data = text.encode("ascii")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "wb") as f:
        f.write(lzma.compress(data, preset=9))
    held = sum(1 for d in alldocs if hashlib.sha256(d.encode()).digest()[0] < 26)
    print(f"packages {len(pk)} of {npk}, licenses {len(li)}, doc files {len(dc)}; "
          f"documents {len(alldocs)} (heldout {held}); bytes {len(data)}; "
          f"sha256 {hashlib.sha256(data).hexdigest()}; xz bytes {os.path.getsize(a.out)}")


if __name__ == "__main__":
    sys.exit(main())
