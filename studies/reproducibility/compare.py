"""Compare the grid's runs (grid.sh) with its first cell.

Prints the first step whose energy differs, the largest relative difference of the
energies, the final energies, the cells whose energies are bit-identical at every step,
and the median seconds per step. Usage: python compare.py OUT
"""

import json
import sys
from pathlib import Path

import pandas as pd

out = Path(sys.argv[1])
rows = []
for system in sorted({d.name for d in out.glob("*/*") if (d / "summary.json").exists()}):
    base = pd.read_csv(out / "native-native" / system / "history.csv")
    for cell in sorted(p.parent.parent.name for p in out.glob(f"*/{system}/summary.json")):
        run = out / cell / system
        history = pd.read_csv(run / "history.csv")
        same = [
            other.parent.parent.name
            for other in sorted(out.glob(f"*/{system}/history.csv"))
            if other.parent.parent.name != cell
            and pd.read_csv(other)["energy"].equals(history["energy"])
        ]
        summary = json.loads((run / "summary.json").read_text())
        differs = (history["energy"] != base["energy"]).to_numpy().nonzero()[0]
        relative = ((history["energy"] - base["energy"]).abs() / base["energy"].abs()).max()
        rows.append({
            "system": system, "cell": cell,
            "first differing step": int(differs[0]) if len(differs) else "none",
            "max rel. diff.": f"{relative:.1e}",
            "final E/N (summary)": f"{summary['energy']:.6f}",
            "bit-identical history with": ", ".join(same) or "none",
            "s/step": f"{history['time_s'].median():.3f}" if "time_s" in history else "",
        })  # fmt: skip
print(pd.DataFrame(rows).to_markdown(index=False))
