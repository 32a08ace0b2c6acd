"""Reproductions of the source papers' results, one module each (``dynopt reproduce NAME``).

A reproduction module exposes ``DESCRIPTION`` and ``run(args) -> int``. ``args`` carries
``out`` (output folder), ``quick`` (a reduced run), ``seeds`` and ``update_docs`` (write the
measured table into docs/reproductions.md via :func:`dynopt.reproductions.report.update_section`).
"""

REGISTRY: dict[str, str] = {
    "adlala": "dynopt.reproductions.adlala",
    "bbi": "dynopt.reproductions.bbi",
    "braking": "dynopt.reproductions.braking",
    "ddpnopt": "dynopt.reproductions.ddpnopt",
    "surfing": "dynopt.reproductions.surfing",
}
