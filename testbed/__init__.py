"""Lab equipment shared by the tests and the benchmarks (not shipped in the wheel).

``natlab``: NAT routers built from network namespaces, with the project's server on the
lab's public side. ``procs``: starting and stopping real processes. Neither tests nor
benchmarks import each other; both import from here.
"""
