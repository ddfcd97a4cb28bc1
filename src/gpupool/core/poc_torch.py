"""PyTorch path of the proof of compute: the same network as ``poc.PocModel`` on a GPU in fp16.

Used only where torch is importable; torch is imported lazily, inside the functions, so importing
this module costs nothing on a CPU-only node. The pool, inputs, permutations and target come from
``poc`` (bit-exact NumPy draws); only the forward pass runs in torch.

The pool goes to the device once and every parameter that fits in it is a *view* of it, as in the
NumPy path: ``v2``'s 17.8 B parameters cost the 1.8 GB of its pool in fp16, not 35 GB. Attention is
``scaled_dot_product_attention`` with a causal mask (flash kernels on Hopper); RMSNorm and RoPE run in
float32 as the reference does them. With ``compile=True`` one layer function is compiled with
``torch.compile`` (all layers share it), which fuses the norm, RoPE and SwiGLU element-wise work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool.core.poc import PocModel, logits_to_distances, nonce_inputs, nonce_permutations, pool_offset

QKV = ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight")
GATE_UP = ("feed_forward.w1.weight", "feed_forward.w3.weight")


def torch_available() -> bool:
    try:
        import torch  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_device_count() -> int:
    """GPUs torch can use here; 0 without torch or without CUDA."""
    if not torch_available():
        return 0
    import torch  # type: ignore[import-not-found,unused-ignore]

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def _rms_norm(x: Any, weight: Any, eps: float) -> Any:
    import torch  # type: ignore[import-not-found,unused-ignore]

    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def _rope(x: Any, cos: Any, sin: Any) -> Any:
    """Rotate interleaved pairs in float32; x is (batch, seq, heads, head_dim), cos/sin (seq, hd/2)."""
    import torch  # type: ignore[import-not-found,unused-ignore]

    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((even * c - odd * s, odd * c + even * s), -1).flatten(-2).type_as(x)


def _layer(h: Any, w: tuple[Any, ...], cos: Any, sin: Any, n_heads: int, n_kv_heads: int, eps: float) -> Any:
    """One decoder block: ``h + attn(norm(h))`` then ``+ ffn(norm(.))``.

    ``w`` holds q|k|v stacked into one matrix and w1|w3 into another, so each is one GEMM that reads
    its input once; the results are the same rows the separate products would give.
    """
    from torch.nn import functional as f  # type: ignore[import-not-found,unused-ignore]

    wqkv, wo, w13, w2, attn_norm, ffn_norm = w
    b, s, d = h.shape
    x = _rms_norm(h, attn_norm, eps)
    kv = (wqkv.shape[0] - d) // 2
    q, k, v = f.linear(x, wqkv).split((d, kv, kv), dim=-1)
    q, k = _rope(q.unflatten(-1, (n_heads, -1)), cos, sin), _rope(k.unflatten(-1, (n_kv_heads, -1)), cos, sin)
    v = v.unflatten(-1, (n_kv_heads, -1))
    if n_heads != n_kv_heads:
        rep = n_heads // n_kv_heads
        k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    attn = f.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
    )
    h = h + f.linear(attn.transpose(1, 2).reshape(b, s, d), wo)
    x = _rms_norm(h, ffn_norm, eps)
    gate, up = f.linear(x, w13).chunk(2, dim=-1)
    return h + f.linear(f.silu(gate) * up, w2)


class TorchPocModel:
    """``PocModel``'s network on a torch device; ``distances`` as in ``PocModel``."""

    def __init__(
        self, model: PocModel, device: str = "cpu", dtype: str = "float16", *, compile: bool = False
    ) -> None:
        import torch  # type: ignore[import-not-found,unused-ignore]

        self.model, self.device, self.dtype = model, torch.device(device), getattr(torch, dtype)
        p = model.params
        pool = torch.from_numpy(model.pool).to(self.device, self.dtype)
        self.w = {name: self._from_pool(pool, name, tuple(arr.shape)) for name, arr in model.weights.items()}
        self.layers = [self._layer_weights(f"layers.{i}.") for i in range(p.n_layers)]
        fused = {f"layers.{i}.{n}" for i in range(p.n_layers) for n in (*QKV, *GATE_UP)}
        self.w = {name: t for name, t in self.w.items() if name not in fused}
        if self.device.type == "cuda":
            # Pool views start at arbitrary element offsets; misaligned operands keep cuBLAS off its
            # tensor-core kernels (measured: 17 % of the H100's fp16 GEMM rate). Aligned copies it is
            # (the fused q|k|v and w1|w3 matrices already are copies).
            self.w = {name: t.clone() for name, t in self.w.items()}
            self.layers = [
                tuple(t if t.data_ptr() % 256 == 0 else t.clone() for t in lw) for lw in self.layers
            ]
            del pool
        self.cos = torch.from_numpy(model.rope_cos).to(self.device)
        self.sin = torch.from_numpy(model.rope_sin).to(self.device)
        self._layer: Callable[..., Any] = _layer
        if compile:
            self._layer = torch.compile(_layer, dynamic=False)

    def _layer_weights(self, pre: str) -> tuple[Any, ...]:
        import torch  # type: ignore[import-not-found,unused-ignore]

        w = self.w
        return (
            torch.cat([w[pre + n] for n in QKV]),
            w[pre + "attention.wo.weight"],
            torch.cat([w[pre + n] for n in GATE_UP]),
            w[pre + "feed_forward.w2.weight"],
            w[pre + "attention_norm.weight"],
            w[pre + "ffn_norm.weight"],
        )

    def _from_pool(self, pool: Any, name: str, shape: tuple[int, ...]) -> Any:
        """A view of the device pool, or (larger than the pool) the tiled pool rotated left."""
        import torch  # type: ignore[import-not-found,unused-ignore]

        size = math.prod(shape)
        is_slice, at = pool_offset(pool.numel(), self.model.block_hash, name, size)
        if is_slice:
            return pool[at : at + size].view(shape)
        tiled = pool.repeat(-(-size // pool.numel()))[:size]
        return torch.cat((tiled[at:], tiled[:at])).view(shape)

    def forward(self, inputs: Any) -> Any:
        """Last-position logits (batch, vocab) in float32, left on the device."""
        p = self.model.params
        h, s = inputs, inputs.shape[1]
        cos, sin = self.cos[:s], self.sin[:s]
        for w in self.layers:
            h = self._layer(h, w, cos, sin, p.n_heads, p.n_kv_heads, p.norm_eps)
        last = _rms_norm(h[:, -1, :], self.w["norm.weight"], p.norm_eps)
        return (last @ self.w["output.weight"].T).float()

    def to_device(self, inputs: npt.NDArray[np.float32]) -> Any:
        """Host inputs (already fp16-rounded) to the device in the model's dtype; async from pinned memory."""
        import torch  # type: ignore[import-not-found,unused-ignore]

        host = torch.from_numpy(np.ascontiguousarray(inputs)).to(self.dtype)
        if self.device.type == "cuda":
            host = host.pin_memory()
        return host.to(self.device, non_blocking=True)

    def logits(self, inputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import torch  # type: ignore[import-not-found,unused-ignore]

        with torch.inference_mode():
            out = self.forward(self.to_device(inputs)).cpu().numpy()
        return np.asarray(out, dtype=np.float32)

    def distances(
        self, public_key: str, nonces: Sequence[int], *, chunk: int = 256
    ) -> npt.NDArray[np.float64]:
        m, nonces = self.model, [int(n) for n in nonces]
        out = np.empty(len(nonces), dtype=np.float64)
        for start in range(0, len(nonces), chunk):
            part = nonces[start : start + chunk]
            logits = self.logits(nonce_inputs(m.block_hash, public_key, part, m.params))
            perms = nonce_permutations(m.block_hash, public_key, part, logits.shape[1])
            out[start : start + len(part)] = logits_to_distances(logits, perms, m.target)
        return out
