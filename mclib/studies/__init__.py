"""The chapters' studies: what the book measures, built from the concept modules of ``mclib``.

A concept module (:mod:`mclib.paths`, :mod:`mclib.curves`, :mod:`mclib.hessian`, :mod:`mclib.som`,
:mod:`mclib.detect`, :mod:`mclib.repair`, ...) holds one idea of the papers and nothing chapter-specific. A study
combines them into the measurement behind a group of claims -- the sampling design, the condition map, the
chapter's table -- one readable file per study:

* :mod:`mclib.studies.pairs` -- pairs of inputs, their barriers and bypasses (claims A1-A5);
* :mod:`mclib.studies.detection` -- the detection table, attack strength and the confidence map (A8, A9);
* :mod:`mclib.studies.codes` -- shallow-code homogeneity against vulnerability over a condition map (B3);
* :mod:`mclib.studies.curves` -- line, Bezier curve and polygonal chain between two endpoints, per seed pair (C1);
* :mod:`mclib.studies.bonafide` -- repair with limited bonafide data: sweeps over N, the baselines' table (C2-C4);
* :mod:`mclib.studies.error_injection` -- error-injected endpoints, their repair and C4's evidence;
* :mod:`mclib.studies.robustness` -- robustness and the input Hessian along a weight-space path (C6, C7).

Studies import concept modules, never the reverse. ``from mclib.studies import pairs`` then ``pairs.barrier_sample(...)``.
"""
