"""Layer 1, pure computation: arrays and tables in, numbers out (no files, no figures; imports only ``core``)."""
