"""Benchmark annotation parsers (MSR-VTT, ActivityNet Captions, Kinetics-400) into manifest samples."""
