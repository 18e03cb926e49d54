"""Tools around the engines: the engine benchmark (``inceptionv4 bench``, :mod:`.bench`) and Triton
model repositories (``inceptionv4 export --format triton``, :mod:`.triton`)."""
