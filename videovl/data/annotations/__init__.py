"""Benchmark annotation parsers (MSR-VTT, ActivityNet Captions, Kinetics-400) into manifest samples, and
question-answering parsers (ActivityNet-QA, the MSRVTT-QA layout) into QA samples."""
