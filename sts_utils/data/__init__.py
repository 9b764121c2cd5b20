"""Layer 2, stage I/O: the files of the outside world and of the stages (imports ``core`` and ``compute``)."""
