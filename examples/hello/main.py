"""The smallest task: print, read an input file from the bundle, write an artifact.

gpupool task submit examples/hello --wait -- python main.py
"""

import os
import platform

print(f"hello from {platform.node()} ({platform.python_version()})", flush=True)
with open("input.txt") as handle:
    words = handle.read().split()
print(f"the bundle's input.txt has {len(words)} words", flush=True)
os.makedirs("output", exist_ok=True)
with open("output/words.txt", "w") as out:
    out.write("\n".join(sorted(words)) + "\n")
print("wrote output/words.txt; fetch it with: gpupool task result <id> -o results/", flush=True)
