"""Training: state, optimizer, jitted step, FLOP accounting, checkpoints, metrics, the loop.

    state.py       TrainState and its sharded creation
    optimizer.py   AdamW, warmup + cosine, clipping, weight-decay mask (config.optim)
    step.py        the jitted train and eval steps (shardings, donation, NaN guard, EMA)
    flops.py       FLOPs of a compiled step, peak FLOP/s per device, MFU
    checkpoint.py  Orbax: state + Grain iterator + config, restore, preemption
    metrics.py     process-0 writers: TensorBoard and metrics.jsonl
    loop.py        the training loop (config.train)
"""
