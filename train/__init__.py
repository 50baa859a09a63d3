"""twofiles training: tokenizer, data preparation and loading, the training loop and its stages.

Kept tiny: importing `train` loads nothing heavy; import the submodule you need
(`train.tokenizer`, `train.chat`, `train.prepare`, `train.loader`, `train.pretrain`, ...).
"""
