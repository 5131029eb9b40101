"""The sampler families, each a Feynman–Kac model of :mod:`smcppl.core.engine` with its front-end
algorithm (a ``build(num_particles, *args) -> Plan``): :mod:`.tempered` (NumPyro models),
:mod:`.sequence` (sequence policies), :mod:`.correctors` (score-based SDE samplers) and
:mod:`.state_space` (particle filters). A family imports ``core``, ``kernels`` and ``models`` only,
never another family or the front end (ARCHITECTURE.md)."""
