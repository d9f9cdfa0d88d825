"""mclib: the library behind the book on mode connectivity and adversarial vulnerability.

Modules depend downward only: a module imports modules of its own layer or of the layers below it, never above,
and no import circle exists (``tests/test_layout.py`` checks both on the source, imports inside functions
included). The layers, bottom first (:data:`LAYERS`; the README's "Layout" table is the same):

1. primitives -- ``runtime`` (the checkout, device, seed, cache and build folders), ``torchutil``, ``infer`` (the
   one inference engine), ``optim``, ``stats``, ``sequential``, ``plots``, ``_check``, ``_optional``;
2. data, models and training -- ``data``, ``models``, ``checkpoints`` (the checksummed, locked model cache),
   ``train`` (recipes and the one fit loop);
3. the papers' objects -- ``paths``, ``synth``, ``attacks``, ``detect``, ``percolation``, ``curves``, ``repair``,
   ``hessian``, ``som``;
4. presets and the run context -- ``config`` (``ctx.model(recipe)`` trains through ``train``);
5. the chapters' studies -- ``studies``;
6. the verdicts -- ``claims``, ``cards``;
7. the book (extra ``mclib[book]``) -- ``runner`` (one chapter and its run record), ``jobs`` (chapters as
   submitit jobs), ``book`` (the build and the HTML), ``site``.
"""
__version__ = "0.1.0"

#: The layer table, bottom first: (name, top-level modules or packages). A package's submodules share its layer.
LAYERS = (
    ("primitives", ("runtime", "torchutil", "infer", "optim", "stats", "sequential", "plots", "_check", "_optional")),
    ("data, models and training", ("data", "models", "checkpoints", "train")),
    ("the papers' objects", ("paths", "synth", "attacks", "detect", "percolation", "curves", "repair", "hessian", "som")),
    ("presets and the run context", ("config",)),
    ("the chapters' studies", ("studies",)),
    ("the verdicts", ("claims", "cards")),
    ("the book", ("runner", "jobs", "book", "site")),
)
