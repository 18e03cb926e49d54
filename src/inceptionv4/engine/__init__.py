"""What training and inference share beyond data and weights: where a run is placed
(:mod:`.devices`) and export checked against eager (:mod:`.export`). Training itself is
:mod:`inceptionv4.train`; evaluation, :mod:`inceptionv4.infer.evaluate`."""
