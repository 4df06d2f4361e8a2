"""Small decoder-only transformer (spec in docs/model.md).

DEFAULT_CONFIG (data/model): n_layers 4, d_model 256, n_heads 4, n_kv_heads 4, head_dim 64, RoPE
(NeoX rotate_half form, theta 10000), pre-RMSNorm (eps 1e-5, with weight), SwiGLU MLP (d_ff 768),
final RMSNorm, lm_head tied to tok_emb, no biases. NATURAL_CONFIG (data/model_nl): the same
architecture with 6 layers, d_model 512, 8 query heads sharing 2 kv heads (GQA, group 4),
head_dim 64, d_ff 1024, theta 100000, 264 byte-level tokens.
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")

DEFAULT_CONFIG = {
    "vocab_size": 800,
    "n_layers": 4,
    "d_model": 256,
    "n_heads": 4,
    "n_kv_heads": 4,
    "head_dim": 64,
    "d_ff": 768,
    "rope_theta": 10000.0,
    "rope_style": "neox_rotate_half",
    "norm_eps": 1e-5,
    "attn_scale": 0.125,
    "tie_embeddings": True,
    "bias": False,
    "activation": "swiglu(silu)",
    "max_context_trained": 8192 + 16,
}

# The second bundled model (data/model_nl): byte tokens, GQA 8 query heads sharing 2 kv heads.
NATURAL_CONFIG = {
    "vocab_size": 264,
    "n_layers": 6,
    "d_model": 512,
    "n_heads": 8,
    "n_kv_heads": 2,
    "head_dim": 64,
    "d_ff": 1024,
    "rope_theta": 100000.0,
    "rope_style": "neox_rotate_half",
    "norm_eps": 1e-5,
    "attn_scale": 0.125,
    "tie_embeddings": True,
    "bias": False,
    "activation": "swiglu(silu)",
    "max_context_trained": 16384 + 128,
}


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def rope_cos_sin(positions, head_dim, theta, device):
    """positions: 1-D LongTensor. Returns cos, sin of shape [T, head_dim] (fp32)."""
    half = head_dim // 2
    inv_freq = theta ** (-torch.arange(0, half, dtype=torch.float64, device=device) * 2.0 / head_dim)
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    # x: [B, H, T, D]; cos/sin: [T, D]
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def attention(q, k, v, causal):
    """q: [B,H,Tq,D], k/v: [B,Hkv,Tk,D]. If causal, query i attends to keys <= i + (Tk - Tq)."""
    H, Hkv = q.shape[1], k.shape[1]
    if H != Hkv:
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
    Tq, Tk = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    if HAS_SDPA and q.is_cuda:
        if causal and Tq > 1:
            if Tq == Tk:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        else:
            return F.scaled_dot_product_attention(q, k, v, scale=scale)
    # explicit fallback
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if causal and Tq > 1:
        i = torch.arange(Tq, device=q.device)[:, None] + (Tk - Tq)
        j = torch.arange(Tk, device=q.device)[None, :]
        s = s.masked_fill(j > i, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.matmul(p, v.float()).to(q.dtype)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, H, Hkv, D = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
        self.H, self.Hkv, self.D = H, Hkv, D
        self.wq = nn.Linear(d, H * D, bias=False)
        self.wk = nn.Linear(d, Hkv * D, bias=False)
        self.wv = nn.Linear(d, Hkv * D, bias=False)
        self.wo = nn.Linear(H * D, d, bias=False)

    def forward(self, x, cos, sin, cache=None):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.wk(x).view(B, T, self.Hkv, self.D).transpose(1, 2)
        v = self.wv(x).view(B, T, self.Hkv, self.D).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if cache is not None and cache.get("k") is not None:
            k = torch.cat([cache["k"], k], dim=2)
            v = torch.cat([cache["v"], v], dim=2)
        if cache is not None:
            cache["k"], cache["v"] = k, v
        o = attention(q, k, v, causal=True)
        o = o.transpose(1, 2).reshape(B, T, self.H * self.D)
        return self.wo(o)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg["d_model"], cfg["d_ff"]
        self.w_gate = nn.Linear(d, f, bias=False)
        self.w_up = nn.Linear(d, f, bias=False)
        self.w_down = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn_norm = RMSNorm(cfg["d_model"], cfg["norm_eps"])
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg["d_model"], cfg["norm_eps"])
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache)
        x = x + self.mlp(self.mlp_norm(x))
        return x


class Decoder(nn.Module):
    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = dict(DEFAULT_CONFIG if cfg is None else cfg)
        c = self.cfg
        self.tok_emb = nn.Embedding(c["vocab_size"], c["d_model"])
        self.layers = nn.ModuleList([Block(c) for _ in range(c["n_layers"])])
        self.norm = RMSNorm(c["d_model"], c["norm_eps"])
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def hidden(self, tokens, start_pos=0, caches=None):
        B, T = tokens.shape
        pos = torch.arange(start_pos, start_pos + T, device=tokens.device)
        cos, sin = rope_cos_sin(pos, self.cfg["head_dim"], self.cfg["rope_theta"], tokens.device)
        x = self.tok_emb(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i])
        return self.norm(x)

    def logits(self, h):
        return torch.matmul(h, self.tok_emb.weight.to(h.dtype).t())

    def forward(self, tokens, start_pos=0, caches=None):
        return self.logits(self.hidden(tokens, start_pos, caches))

    @torch.no_grad()
    def greedy(self, prompts, n_new):
        """prompts: LongTensor [B, L] (same length). Returns [B, n_new] greedy tokens (KV cache)."""
        caches = [dict() for _ in self.layers]
        logits = self.forward(prompts, 0, caches)[:, -1]
        out = []
        pos = prompts.shape[1]
        for i in range(n_new):
            nxt = logits.float().argmax(-1)
            out.append(nxt)
            if i + 1 == n_new:
                break
            logits = self.forward(nxt[:, None], pos, caches)[:, -1]
            pos += 1
        return torch.stack(out, dim=1)


# ---------------------------------------------------------------- weights I/O
def export_state(model):
    """Tensor names of the shipped format -> fp32 numpy arrays."""
    sd = model.state_dict()
    out = {"tok_emb.weight": sd["tok_emb.weight"]}
    for i in range(model.cfg["n_layers"]):
        p = f"layers.{i}."
        out[p + "attn_norm.weight"] = sd[p + "attn_norm.weight"]
        for n in ["wq", "wk", "wv", "wo"]:
            out[p + f"{n}.weight"] = sd[p + f"attn.{n}.weight"]
        out[p + "mlp_norm.weight"] = sd[p + "mlp_norm.weight"]
        for n in ["w_gate", "w_up", "w_down"]:
            out[p + f"{n}.weight"] = sd[p + f"mlp.{n}.weight"]
    out["norm.weight"] = sd["norm.weight"]
    return {k: v.detach().float().cpu().numpy() for k, v in out.items()}


def import_state(model, tensors):
    sd = {}
    for k, v in tensors.items():
        kk = k
        if k.startswith("layers."):
            parts = k.split(".")
            if parts[2] in ("wq", "wk", "wv", "wo"):
                kk = ".".join(parts[:2] + ["attn"] + parts[2:])
            elif parts[2] in ("w_gate", "w_up", "w_down"):
                kk = ".".join(parts[:2] + ["mlp"] + parts[2:])
        sd[kk] = torch.from_numpy(np.ascontiguousarray(v).astype(np.float32))
    model.load_state_dict(sd, strict=True)


def save_safetensors_f16(path, tensors, metadata=None):
    """Hand-written safetensors writer: 8-byte LE header length, JSON header, raw F16 data."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name].astype("<f2"))
        b = a.tobytes()
        header[name] = {"dtype": "F16", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
        data = f.read()
    out = {}
    dt = {"F16": "<f2", "F32": "<f4", "BF16": None}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        out[name] = np.frombuffer(data[s:e], dtype=dt[info["dtype"]]).reshape(info["shape"]).astype(np.float32)
    return out


def load_model(weights_path, config_path=None, device="cpu"):
    cfg = None
    if config_path:
        with open(config_path) as f:
            cfg = json.load(f)
        cfg = {k: cfg[k] for k in DEFAULT_CONFIG if k in cfg}
        cfg = {**DEFAULT_CONFIG, **cfg}
    m = Decoder(cfg)
    import_state(m, load_safetensors(weights_path))
    return m.to(device).eval()
