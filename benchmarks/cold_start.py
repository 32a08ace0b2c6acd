"""What a fresh machine pays before the first result: numba compiles on an empty cache (issue 11).

Each row runs in a new Python process with ``DYNOPT_CACHE_DIR`` pointing to a new empty
directory (so nothing compiled earlier is reused), except the "warm" row, which reuses the
cache the first study filled. Rows: the README's main job (``python -m dynopt study``, plots
included) cold and warm; importing the ``integrate()`` kernel (it compiles on import); the
extended ops' first use; the first ``Langevin.step()`` of a float32 model (the fused optimizer
kernel). Wall seconds of the whole process. Issue 11's target: the first study ≤ 15 s.

    python benchmarks/cold_start.py [--quick] [--update-docs]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from _common import command, markdown_table, parse_args, write_section

TARGET_S = 15.0
FIRST_STEP = ("import torch\nfrom dynopt.optim import Langevin\n"
              "p = torch.nn.Parameter(torch.randn(100_000)); p.grad = torch.randn(100_000)\n"
              "Langevin([p], lr=1e-3, gamma=1.0, temperature=1e-6).step()\n")


def run(args: list[str], cache: str, cwd: str) -> float:
    """Wall seconds of ``python ARGS`` with the numba cache in ``cache``; raises on failure."""
    env = dict(os.environ, DYNOPT_CACHE_DIR=cache)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    repeats = 1 if args.quick else 2
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            cache = os.path.join(tmp, f"study{r}")
            out = os.path.join(tmp, f"out{r}")
            study = ["-m", "dynopt", "study", "--out", out]
            rows.setdefault("first `dynopt study`, empty cache", []).append(run(study, cache, tmp))
            rows.setdefault("the same study, warm cache", []).append(run(study, cache, tmp))
            rows.setdefault("import dynopt.backends.numba.kernel, empty cache", []).append(
                run(["-c", "import dynopt.backends.numba.kernel"], os.path.join(tmp, f"k{r}"), tmp))
            rows.setdefault("first extended op (import extended_ops), kernel cached", []).append(
                run(["-c", "import dynopt.backends.numba.extended_ops"],
                    os.path.join(tmp, f"k{r}"), tmp))
            rows.setdefault("first Langevin.step() (float32, 100,000 params), empty cache",
                            []).append(run(["-c", FIRST_STEP], os.path.join(tmp, f"o{r}"), tmp))
    for name, ts in rows.items():
        print(f"{name:66s} " + " / ".join(f"{t:5.1f} s" for t in ts))
    first = min(rows["first `dynopt study`, empty cache"])
    verdict = (f"Issue 11 target, first study ≤ {TARGET_S:.0f} s on an empty cache: "
               f"{first:.1f} s ({'met' if first <= TARGET_S else 'missed'}).")
    print(verdict)
    if args.update_docs:
        table = markdown_table(["what (new process each)", "wall seconds"],
                               [[n, " / ".join(f"{t:.1f}" for t in ts)] for n, ts in rows.items()])
        write_section("cold-start", "Cold start on an empty numba cache",
                      command("cold_start", args), table,
                      notes=(f"Each run {repeats}×; a new empty DYNOPT_CACHE_DIR per row except "
                             "the warm study. " + verdict + " `.ci/setup.sh` runs `dynopt "
                             "compile`, so after set-up every row is warm."))


if __name__ == "__main__":
    main()
