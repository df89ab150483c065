"""Where samples come from: the manifest format and its sample record, the question-answering record,
manifests read into flat tables (and their on-disk cache), and WebDataset shards
(:mod:`videovl.data.sources.shards`, imported by name: it is only needed to train from shards)."""

from videovl.data.sources.manifest import (
    ManifestError,
    Sample,
    parse_fields,
    read_manifest_objects,
    write_manifest,
)
from videovl.data.sources.manifest_table import (
    SampleTable,
    caption_counts,
    labels,
    load_table,
    modalities,
    read_manifest,
)
from videovl.data.sources.qa import QASample

__all__ = [
    "ManifestError",
    "QASample",
    "Sample",
    "SampleTable",
    "caption_counts",
    "labels",
    "load_table",
    "modalities",
    "parse_fields",
    "read_manifest",
    "read_manifest_objects",
    "write_manifest",
]
