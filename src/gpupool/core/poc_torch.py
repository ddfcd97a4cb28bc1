"""PyTorch path of the proof of compute: the same network as ``poc.PocModel`` on a GPU in fp16.

Used only where torch is importable; this module imports torch lazily, inside the functions, so
importing it costs nothing on a CPU-only node. Weights, inputs, permutations and the target come from
``poc`` (bit-exact NumPy draws); only the forward pass runs in torch. On the CPU in float32 it agrees
with the NumPy path to float32 rounding; in fp16 on a GPU it is what the reference network computes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool.core.poc import PocModel, nonce_inputs, nonce_permutations


def torch_available() -> bool:
    try:
        import torch  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


class TorchPocModel:
    """``PocModel``'s weights moved to a torch device and dtype; ``distances`` as in ``PocModel``."""

    def __init__(self, model: PocModel, device: str = "cpu", dtype: str = "float16") -> None:
        import torch  # type: ignore[import-not-found,unused-ignore]

        self.model, self.device, self.dtype = model, torch.device(device), getattr(torch, dtype)
        self.w = {k: torch.from_numpy(v).to(self.device, self.dtype) for k, v in model.weights.items()}
        self.cos = torch.from_numpy(model.rope_cos).to(self.device)
        self.sin = torch.from_numpy(model.rope_sin).to(self.device)

    def _norm(self, x: Any, weight: Any) -> Any:
        import torch  # type: ignore[import-not-found,unused-ignore]

        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.model.params.norm_eps)
        return out.type_as(x) * weight

    def _rope(self, x: Any) -> Any:
        import torch  # type: ignore[import-not-found,unused-ignore]

        s = x.shape[1]
        pairs = x.float().reshape(*x.shape[:-1], -1, 2)
        c, sn = self.cos[:s].view(1, s, 1, -1), self.sin[:s].view(1, s, 1, -1)
        even, odd = pairs[..., 0], pairs[..., 1]
        return torch.stack([even * c - odd * sn, odd * c + even * sn], -1).flatten(3).type_as(x)

    def _attention(self, x: Any, i: int, mask: Any) -> Any:
        import torch  # type: ignore[import-not-found,unused-ignore]

        p, w, (b, s, _) = self.model.params, self.w, x.shape
        pre = f"layers.{i}.attention."
        q = (x @ w[pre + "wq.weight"].T).view(b, s, p.n_heads, p.head_dim)
        k = (x @ w[pre + "wk.weight"].T).view(b, s, p.n_kv_heads, p.head_dim)
        v = (x @ w[pre + "wv.weight"].T).view(b, s, p.n_kv_heads, p.head_dim)
        q, k = self._rope(q), self._rope(k)
        rep = p.n_heads // p.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(2, 3)) / math.sqrt(p.head_dim) + mask
        scores = torch.softmax(scores.float(), dim=-1).type_as(q)
        out = (scores @ v).transpose(1, 2).reshape(b, s, -1)
        return out @ w[pre + "wo.weight"].T

    def logits(self, inputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import torch  # type: ignore[import-not-found,unused-ignore]

        p, w = self.model.params, self.w
        with torch.no_grad():
            h = torch.from_numpy(inputs).to(self.device, self.dtype)
            s = h.shape[1]
            mask = torch.triu(torch.full((s, s), float("-inf"), device=self.device), 1).type_as(h)
            for i in range(p.n_layers):
                pre = f"layers.{i}."
                h = h + self._attention(self._norm(h, w[pre + "attention_norm.weight"]), i, mask)
                x = self._norm(h, w[pre + "ffn_norm.weight"])
                gate = torch.nn.functional.silu(x @ w[pre + "feed_forward.w1.weight"].T)
                h = (
                    h
                    + (gate * (x @ w[pre + "feed_forward.w3.weight"].T)) @ w[pre + "feed_forward.w2.weight"].T
                )
            last = self._norm(h[:, -1, :], w["norm.weight"])
            out = (last @ w["output.weight"].T).float().cpu().numpy()
        return np.asarray(out, dtype=np.float32)

    def distances(
        self, public_key: str, nonces: Sequence[int], *, chunk: int = 256
    ) -> npt.NDArray[np.float64]:
        m, nonces = self.model, [int(n) for n in nonces]
        out = np.empty(len(nonces), dtype=np.float64)
        for start in range(0, len(nonces), chunk):
            part = nonces[start : start + chunk]
            logits = self.logits(nonce_inputs(m.block_hash, public_key, part, m.params))
            permuted = np.take_along_axis(
                logits, nonce_permutations(m.block_hash, public_key, part, logits.shape[1]), 1
            )
            unit = permuted / np.linalg.norm(permuted, axis=1, keepdims=True)
            out[start : start + len(part)] = np.linalg.norm(unit - m.target, axis=1)
        return out
