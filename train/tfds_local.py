"""A TFDS builder for a local text corpus, so `tfds:` sources work (and are tested) offline.

The builder `twofiles_local_text` reads the .txt/.jsonl/.parquet files of its manual folder
(the documents `train.corpus` would read from that folder) into one `train` split with a single
`text` feature, stored as ArrayRecord so it is read back without TensorFlow:

    from train import tfds_local
    tfds_local.build("my_texts/", data_dir="tfds_data")
    # then: python -m train prepare --source tfds:twofiles_local_text \
    #           --tfds-data-dir tfds_data --tokenizer tok.json --out data/mine
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from train import corpus


class TwofilesLocalText(tfds.core.GeneratorBasedBuilder):
    """Documents from local files (the manual folder), one `text` feature each."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the corpus's .txt, .jsonl or .parquet files in manual_dir."

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        files = corpus.expand_paths(str(dl_manager.manual_dir))
        return {"train": self._generate_examples(files)}

    def _generate_examples(self, files):
        for i, text in enumerate(corpus.file_documents(files)):
            yield i, {"text": text}


def build(manual_dir, data_dir) -> TwofilesLocalText:
    """Build (or reuse) the dataset from the files in `manual_dir` under TFDS `data_dir`."""
    builder = TwofilesLocalText(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder
