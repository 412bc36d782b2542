"""data_prep: public medical imaging collections → WebDataset shards + manifest (the first lvmmed stage).

Entry point: ``python -m data_prep {list,convert,inspect,verify,bundled,demo}``. The shard format is defined in
:mod:`lvmmed.data.shards`; readers, de-identification and intensity processing come from :mod:`lvmmed.data`.
"""

CONVERTER_VERSION = "0.1.0"
