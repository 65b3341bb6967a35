"""Print the README's set-up commands, so CI runs exactly what the README tells users to run.

The first fenced ``bash`` block of README.md holds two lines:
1. install + run the default pipeline (``... && .venv/bin/snakemake --cores all``);
2. the test command.

``python .ci/readme_commands.py install`` prints line 1 without the trailing pipeline run (CI runs the
pipeline through the end-to-end tests instead), ``... test`` prints line 2, ``... main`` prints line 1.
"""

import re
import sys
from pathlib import Path

RUN_SUFFIX = " && .venv/bin/snakemake --cores all"


def commands(readme: Path) -> tuple[str, str]:
    block = re.search(r"```bash\n(.*?)```", readme.read_text(), re.S)
    if not block:
        sys.exit("README.md has no ```bash block")
    lines = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) < 2 or not lines[0].endswith(RUN_SUFFIX):
        sys.exit(f"README.md's first bash block must be '<install>{RUN_SUFFIX}' then the test command")
    return lines[0], lines[1]


if __name__ == "__main__":
    main, test = commands(Path(__file__).resolve().parents[1] / "README.md")
    what = sys.argv[1] if len(sys.argv) > 1 else "main"
    print({"main": main, "install": main[: -len(RUN_SUFFIX)], "test": test}[what])
