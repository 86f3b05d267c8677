"""labkit's internal helpers layer: small mechanisms every step shares, one copy each.

- ``procs``: process groups (liveness, one stop policy with one grace period)
- ``fs``: atomic writes, checksums, sizes for people
- ``net``: free loopback ports
- ``names``: the naming rules of git commits, AI Core and the Hub
- ``html``: the HTML tables the notebooks display
- ``pip``: the wheel folders pip is pointed at, for uv and image builds

Nothing here imports a step module; any step module may import from here.
"""
