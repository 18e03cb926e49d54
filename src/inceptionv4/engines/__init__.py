"""The inference engines' common ground: what an opened session is (:mod:`.session`), below the
tasks that run one (:mod:`inceptionv4.infer`) and the engines that build one."""
