"""What does the task see? The GPUs it was given (nvidia-smi when present), else the CPU.

gpupool task submit examples/gpu-check --gpus 1 --wait -- python main.py
"""

import json
import os
import shutil
import subprocess

visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
print(f"CUDA_VISIBLE_DEVICES={visible!r} (task {os.environ.get('GPUPOOL_TASK_ID', '?')})", flush=True)
report = {"cuda_visible_devices": visible, "gpus": [], "cpu_count": os.cpu_count()}
if shutil.which("nvidia-smi"):
    query = "index,name,memory.total,utilization.gpu,temperature.gpu"
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    print(out.stdout or out.stderr, flush=True)
    report["gpus"] = [line.split(", ") for line in out.stdout.strip().splitlines()]
else:
    print(f"no nvidia-smi on this node: a CPU node with {os.cpu_count()} CPUs", flush=True)
os.makedirs("output", exist_ok=True)
with open("output/report.json", "w") as handle:
    json.dump(report, handle, indent=2)
