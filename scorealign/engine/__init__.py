"""Generation and log-prob forwards: the sampler, the lean decoder and forward, shared-prompt packing."""
