"""The chapters' studies: what the book measures, built from the concept modules of ``mclib``.

A concept module (:mod:`mclib.paths`, :mod:`mclib.curves`, :mod:`mclib.hessian`, :mod:`mclib.som`,
:mod:`mclib.detect`, :mod:`mclib.repair`, ...) holds one idea of the papers and nothing chapter-specific. A study
combines them into the measurement behind a group of claims -- the sampling design, the condition map, the
chapter's table -- one readable file per study. Each study defines its chapter's ``Sizes``: a frozen dataclass
of typed fields read from the chapter's preset file (:class:`mclib.config.Sizes`; ``S = pairs.Sizes.read(ctx)``,
then ``S.n_pairs``), and each study result has one method or function returning exactly the evidence its claims'
judges read (:mod:`mclib.claims` keeps only thresholds and verdicts).

Where each chapter's pieces live (chapter = notebook + study + preset file in ``mclib/presets/``; a preset file
shared by two chapters is read by one ``Sizes`` class):

* ``notebooks/a1_real_paths.ipynb`` -- :mod:`mclib.studies.pairs` -- ``paths.toml`` -- A1-A3;
* ``notebooks/a4_interpolated_synthetic.ipynb`` -- :mod:`mclib.studies.pairs` -- ``paths.toml`` -- A4, A5;
* ``notebooks/a6_untrained.ipynb`` -- :mod:`mclib.studies.untrained` -- ``untrained.toml`` -- A6;
* ``notebooks/a7_barrier_evolution.ipynb`` -- :mod:`mclib.studies.evolution` -- ``evolution.toml`` -- A7;
* ``notebooks/a8_detection.ipynb`` -- :mod:`mclib.studies.detection` -- ``detect.toml`` -- A8, A9;
* ``notebooks/a10_percolation.ipynb`` -- :mod:`mclib.studies.percolation` -- ``percolation.toml`` -- A10;
* ``notebooks/b_internal_codes.ipynb`` -- :mod:`mclib.studies.codes` -- ``som.toml`` -- B1-B3;
* ``notebooks/own_model.ipynb`` -- :mod:`mclib.studies.own_model` -- ``detect.toml`` -- no claim;
* ``notebooks/c1_curves.ipynb`` -- :mod:`mclib.studies.curves` -- ``curves.toml`` -- C1;
* ``notebooks/c2_backdoor_repair.ipynb`` -- :mod:`mclib.studies.bonafide` -- ``repair.toml`` -- C2, C3, C5;
* ``notebooks/c4_error_injection.ipynb`` -- :mod:`mclib.studies.error_injection` -- ``repair.toml`` -- C4;
* ``notebooks/c6_robustness_hessian.ipynb`` -- :mod:`mclib.studies.robustness` -- ``robustness.toml`` -- C6, C7;
* ``notebooks/c8_across_architectures.ipynb`` -- :mod:`mclib.studies.across` -- ``across.toml`` -- C8 (it reads
  the records of C1-C7).

The repair chapters share ``repair.toml`` (:class:`mclib.studies.bonafide.Sizes`) and their data
(:class:`mclib.studies.bonafide.RepairData`); C4 reads its own keys of it (``n_chosen``, ``c4_seed_pairs``,
``inject_steps``) through :func:`mclib.studies.error_injection.injected_for`. Where a claim judges a condition map
(C2, C3), the study returns the map's inputs (``study.c2_input(...)``) and :mod:`mclib.claims` judges them: studies
import concept modules and :mod:`mclib.config`, never :mod:`mclib.claims`. ``from mclib.studies import pairs`` then
``pairs.barrier_sample(...)``.
"""
