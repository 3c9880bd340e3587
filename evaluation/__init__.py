"""The evaluation engine: load -> generate -> score -> judge -> statistics -> write (:mod:`evaluation.engine`)."""
