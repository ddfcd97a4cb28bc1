"""Our NVML reader on a real GPU next to nvidia-smi, for the device machine: prints both as JSON."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpupool.node.gpu import read_inventory, registration_gpus

FIELDS = (
    "index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,power.limit,"
    "clocks.sm,clocks.max.sm,compute_cap,pci.bus_id,driver_version"
)

inventory = read_inventory()
smi = subprocess.run(
    ["nvidia-smi", f"--query-gpu={FIELDS}", "--format=csv,noheader,nounits"], capture_output=True, text=True
).stdout
print(
    json.dumps(
        {
            "ours": dataclasses.asdict(inventory),
            "registration": registration_gpus(inventory),
            "nvidia_smi_csv": [
                dict(zip(FIELDS.split(","), (v.strip() for v in line.split(",")), strict=False))
                for line in smi.splitlines()
                if line.strip()
            ],
        },
        indent=1,
        default=str,
    )
)
