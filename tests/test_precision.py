"""``train.mixed_precision: auto``: bf16 only where the device computes in it."""

from __future__ import annotations

import logging

import pytest

from videovl.config import ConfigError
from videovl.train import accelerator
from videovl.train.accelerator import cpu_has_bf16, resolve_precision

AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
NEOVERSE = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_bf16_units_are_read_from_the_cpu_flags():
    assert not cpu_has_bf16(AVX2)
    assert cpu_has_bf16(SAPPHIRE) and cpu_has_bf16(NEOVERSE)
    assert not cpu_has_bf16("")


@pytest.mark.parametrize(("flags", "expected"), [(AVX2, "no"), (SAPPHIRE, "bf16")])
def test_auto_on_a_cpu(monkeypatch, flags, expected):
    monkeypatch.setattr(accelerator, "cpu_has_bf16", lambda: cpu_has_bf16(flags))
    assert resolve_precision("auto", cpu=True) == expected
    assert resolve_precision("no", cpu=True) == "no"


def test_explicit_bf16_on_a_cpu_without_units_is_kept_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(accelerator, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("bf16", cpu=True) == "bf16"
    assert "no bf16 units" in caplog.text and "mixed_precision=auto" in caplog.text


def test_an_unknown_precision_is_named():
    with pytest.raises(ConfigError, match="'fp8'.*auto"):
        resolve_precision("fp8", cpu=True)
