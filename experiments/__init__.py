"""Experiments that train and evaluate together (tool use, data poisoning), each with its commands,
results and plots committed beside it, as `scaling/results/` holds the sweep's. They may import
every package; nothing imports them."""
