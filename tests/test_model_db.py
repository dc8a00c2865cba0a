"""capsim.models.db: the shipped database, its provenance, published counts, look-ups and resolve_model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from capsim._paths import data_dir
from capsim.errors import DataFileError, UnknownModelError
from capsim.models.db import ModelDB, load_model_db, resolve_model

REFERENCE = Path("/work/shared/reference/models")

# model_db id -> reference file it must be an unchanged copy of (models.md §1 "Config file" column)
REFERENCE_FILES = {
    "mixtral-8x7b": "Mixtral-8x7B.json",
    "mixtral-8x22b": "Mixtral-8x22B.json",
    "deepseek-v2": "DeepSeek-V2.json",
    "deepseek-v2-lite": "DeepSeek-V2-Lite.json",
    "deepseek-v3": "DeepSeek-V3.json",
    "deepseek-r1": "DeepSeek-R1.json",
    "qwen1.5-moe-a2.7b": "Qwen1.5-MoE-A2.7B.json",
    "qwen2-57b-a14b": "Qwen2-57B-A14B.json",
    "qwen3-30b-a3b": "Qwen3-30B-A3B.json",
    "qwen3-235b-a22b": "Qwen3-235B-A22B.json",
    "dbrx": "DBRX.json",
    "olmoe-1b-7b": "OLMoE-1B-7B.json",
    "gpt-oss-20b": "GPT-OSS-20B.json",
    "gpt-oss-120b": "GPT-OSS-120B.json",
    "llama-4-scout": "Llama-4-Scout.json",
    "llama-4-maverick": "Llama-4-Maverick.json",
    "phi-3.5-moe": "Phi-3.5-MoE.json",
    "grok-1": "Grok-1.json",
}

# Published counts from /work/shared/reference/models.md §1 (Total params / Active params columns; the
# publishers' URLs are in model_db/published.toml). Repeated here, not read from published.toml, so a typo
# in the data file cannot pass unnoticed.
PUBLISHED = {
    "mixtral-8x7b": (46.7e9, 12.9e9),
    "mixtral-8x22b": (141e9, 39e9),
    "deepseek-v2": (236e9, 21e9),
    "deepseek-v2-lite": (15.7e9, 2.4e9),
    "deepseek-v3": (671e9, 37e9),
    "deepseek-r1": (671e9, 37e9),
    "qwen1.5-moe-a2.7b": (14.3e9, 2.7e9),
    "qwen2-57b-a14b": (57e9, 14e9),
    "qwen3-30b-a3b": (30.5e9, 3.3e9),
    "qwen3-235b-a22b": (235e9, 22e9),
    "dbrx": (132e9, 36e9),
    "olmoe-1b-7b": (6.9e9, 1.3e9),
    "gpt-oss-20b": (20.9e9, 3.6e9),
    "gpt-oss-120b": (116.8e9, 5.1e9),
    "llama-4-scout": (109e9, 17e9),
    "llama-4-maverick": (400e9, 17e9),
    "phi-3.5-moe": (41.9e9, 6.6e9),
    "grok-1": (314e9, None),  # no active count published; see test_grok1_active_within_soft_range
}

TOLERANCE = 0.02
# DeepSeek-V2-Lite: capsim counts 2,451,435,008 active (without the embedding table, the convention that fits
# DeepSeek-V2 and V3), 2.14 % above the published "2.4B". The publisher rounds to two significant figures,
# so 2.4B stands for [2.35B, 2.45B); capsim is 1.4M parameters (0.06 %) past its upper edge. Allowed 2.5 %.
TOLERANCE_EXCEPTIONS = {("deepseek-v2-lite", "active"): 0.025}


@pytest.fixture(scope="module")
def db() -> ModelDB:
    """The shipped database (cached by load_model_db). Read-only: do not mutate specs from it."""
    return load_model_db()


def test_all_ids_present(db: ModelDB) -> None:
    assert db.ids() == sorted(REFERENCE_FILES)
    assert len(db) == 18


def test_every_entry_loads_with_family_and_source(db: ModelDB) -> None:
    families = {model_id: db.get(model_id).family for model_id in db.ids()}
    assert families == {
        "dbrx": "dbrx",
        "deepseek-r1": "deepseek_v3",
        "deepseek-v2": "deepseek_v2",
        "deepseek-v2-lite": "deepseek_v2",
        "deepseek-v3": "deepseek_v3",
        "gpt-oss-120b": "gpt_oss",
        "gpt-oss-20b": "gpt_oss",
        "grok-1": "grok1",
        "llama-4-maverick": "llama4",
        "llama-4-scout": "llama4",
        "mixtral-8x22b": "mixtral",
        "mixtral-8x7b": "mixtral",
        "olmoe-1b-7b": "olmoe",
        "phi-3.5-moe": "phimoe",
        "qwen1.5-moe-a2.7b": "qwen2_moe",
        "qwen2-57b-a14b": "qwen2_moe",
        "qwen3-235b-a22b": "qwen3_moe",
        "qwen3-30b-a3b": "qwen3_moe",
    }
    for model_id in db.ids():
        spec = db.get(model_id)
        assert spec.id == model_id
        assert spec.source.startswith("https://")
        assert spec.name == db.published(model_id).name  # type: ignore[union-attr]


@pytest.mark.parametrize("model_id", sorted(REFERENCE_FILES))
def test_db_files_are_unchanged_reference_copies(model_id: str) -> None:
    ref = REFERENCE / REFERENCE_FILES[model_id]
    if not ref.is_file():
        pytest.skip("reference sheet not available in this checkout")
    assert (data_dir("model_db") / f"{model_id}.json").read_bytes() == ref.read_bytes()


@pytest.mark.parametrize("model_id", sorted(PUBLISHED))
def test_published_toml_matches_reference_sheet(db: ModelDB, model_id: str) -> None:
    pub = db.published(model_id)
    assert pub is not None
    assert (pub.total_params, pub.active_params) == PUBLISHED[model_id]


@pytest.mark.parametrize("model_id", sorted(PUBLISHED))
def test_total_within_2_percent_of_published(db: ModelDB, model_id: str) -> None:
    spec, published_total = db.get(model_id), PUBLISHED[model_id][0]
    tol = TOLERANCE_EXCEPTIONS.get((model_id, "total"), TOLERANCE)
    assert abs(spec.total_params - published_total) <= tol * published_total


@pytest.mark.parametrize("model_id", sorted(m for m, (_, a) in PUBLISHED.items() if a is not None))
def test_active_within_2_percent_of_published(db: ModelDB, model_id: str) -> None:
    # Like with like: capsim's active count excludes the input-embedding table; where the publisher's figure
    # includes it (published.toml active_counts_embedding, e.g. Qwen states 2.7B with / 2.0B without), the
    # table is added back. GPT-OSS's card counts without it, as capsim does.
    spec, pub = db.get(model_id), db.published(model_id)
    assert pub is not None
    published_active = PUBLISHED[model_id][1]
    assert published_active is not None
    comparable = spec.active_params + (spec.embedding_params if pub.active_counts_embedding else 0)
    assert pub.comparable_active(spec) == comparable
    tol = TOLERANCE_EXCEPTIONS.get((model_id, "active"), TOLERANCE)
    assert abs(comparable - published_active) <= tol * published_active


def test_deepseek_v2_lite_exception_is_still_needed(db: ModelDB) -> None:
    """The one widened tolerance must stay justified: fail if the count moves inside 2 % (drop it then)."""
    spec = db.get("deepseek-v2-lite")
    # attention 27 * (2048*16*192 + 2048*576 + 512 + 512*16*256 + 16*128*2048) = 27 * 13,763,072 = 371,602,944
    # router 26 * 2048*64 = 3,407,872; routed top-6: 26 * 6 * 3*2048*1408 = 1,349,517,312
    # shared (2 x 1408): 26 * 3*2048*2816 = 449,839,104; dense layer 0: 3*2048*10944 = 67,239,936
    # norms 27*2*2048 + 2048 = 112,640; lm_head 102400*2048 = 209,715,200
    assert (
        spec.active_params
        == (371_602_944 + 3_407_872 + 1_349_517_312 + 449_839_104 + 67_239_936 + 112_640 + 209_715_200)
        == 2_451_435_008
    )
    assert 0.02 < spec.active_params / 2.4e9 - 1 < 0.025


def test_grok1_active_within_soft_range(db: ModelDB) -> None:
    # xAI: "25% of weights active per token"; models.md: ~79-86B derived by third parties (?)
    pub, spec = db.published("grok-1"), db.get("grok-1")
    assert pub is not None and pub.active_soft and pub.active_params is None
    assert pub.active_range == (79e9, 86e9)
    # attention 64 * 88,080,384 = 5,637,144,576; router 64 * 6144*8 = 3,145,728
    # routed top-2: 64 * 2 * 3*6144*32768 = 77,309,411,328; norms 64*4*6144 + 6144 = 1,579,008
    # lm_head (tied table, read per token) 131072*6144 = 805,306,368
    assert (
        spec.active_params
        == (5_637_144_576 + 3_145_728 + 77_309_411_328 + 1_579_008 + 805_306_368)
        == 83_756_587_008
    )
    assert pub.active_range[0] <= pub.comparable_active(spec) <= pub.active_range[1]


def test_relative_differences(db: ModelDB) -> None:
    spec, pub = db.get("mixtral-8x7b"), db.published("mixtral-8x7b")
    assert pub is not None
    # (46,702,792,704 - 46.7e9) / 46.7e9
    assert pub.total_rel_diff(spec) == pytest.approx((46_702_792_704 - 46.7e9) / 46.7e9)
    # like for like: 12,748,853,248 + 131,072,000 (embedding table) = 12,879,925,248 vs 12.9e9
    assert pub.active_rel_diff(spec) == pytest.approx((12_879_925_248 - 12.9e9) / 12.9e9)


def test_ids_case_insensitive(db: ModelDB) -> None:
    assert db.get("Mixtral-8x7B") is db.get("mixtral-8x7b")
    assert "DBRX" in db and "gpt-5" not in db


def test_unknown_id_close_matches(db: ModelDB) -> None:
    with pytest.raises(UnknownModelError) as info:
        db.get("mixtral-8x7")
    assert info.value.close_matches == ["mixtral-8x7b", "mixtral-8x22b"]
    assert info.value.args[0] == "unknown model 'mixtral-8x7'; did you mean 'mixtral-8x7b', 'mixtral-8x22b'?"
    assert isinstance(info.value, KeyError)


def test_hf_style_id_matched_on_last_component(db: ModelDB) -> None:
    with pytest.raises(UnknownModelError) as info:
        db.get("deepseek-ai/DeepSeek-V3")
    assert info.value.close_matches[0] == "deepseek-v3"


def test_unknown_id_without_close_match_lists_ids(db: ModelDB) -> None:
    with pytest.raises(UnknownModelError) as info:
        db.get("zzz")
    assert info.value.close_matches == []
    assert info.value.args[0].startswith("unknown model 'zzz'; valid ids: dbrx, deepseek-r1, ")


def test_load_model_db_is_cached() -> None:
    assert load_model_db() is load_model_db()


def test_resolve_model_id_file_and_folder(tmp_path: Path) -> None:
    assert resolve_model("qwen3-30b-a3b").id == "qwen3-30b-a3b"
    path = tmp_path / "my-moe.json"
    shutil.copy(data_dir("model_db") / "olmoe-1b-7b.json", path)
    spec = resolve_model(str(path))
    assert (spec.id, spec.family) == ("my-moe", "olmoe")
    folder = tmp_path / "OLMoE"
    folder.mkdir()
    shutil.copy(path, folder / "config.json")
    assert resolve_model(str(folder)).id == "OLMoE"


def test_resolve_model_missing_json_path() -> None:
    with pytest.raises(DataFileError) as info:
        resolve_model("no/such/config.json")
    assert str(info.value) == (
        "no/such/config.json: no such file; give an existing config.json path or a model id (capsim model list)"
    )


def test_resolve_model_forced_family(tmp_path: Path) -> None:
    cfg = json.loads((data_dir("model_db") / "grok-1.json").read_text())
    del cfg["_source"]
    path = tmp_path / "grok.json"
    path.write_text(json.dumps(cfg))
    assert resolve_model(str(path), family="grok1").family == "grok1"


# ---- a database of the user's own (tmp) files: published.toml validation ----------------------------------
def _tiny_db(tmp_path: Path, published: str) -> Path:
    shutil.copy(data_dir("model_db") / "mixtral-8x7b.json", tmp_path / "mixtral-8x7b.json")
    (tmp_path / "published.toml").write_text(published)
    return tmp_path


_GOOD_ENTRY = """
[mixtral-8x7b]
name = "Mixtral-8x7B"
source = "https://example.org/test-entry"
total_params = 46.7e9
active_params = 12.9e9
active_counts_embedding = true
convention_basis = "inferred"
"""


def test_tiny_db(tmp_path: Path) -> None:
    tiny = load_model_db(_tiny_db(tmp_path, _GOOD_ENTRY))
    assert tiny.ids() == ["mixtral-8x7b"]
    assert tiny.published("mixtral-8x7b").source == "https://example.org/test-entry"  # type: ignore[union-attr]
    assert tiny.config_path("MIXTRAL-8x7b").name == "mixtral-8x7b.json"


def test_tiny_db_without_published_file(tmp_path: Path) -> None:
    shutil.copy(data_dir("model_db") / "dbrx.json", tmp_path / "dbrx.json")
    tiny = ModelDB(tmp_path)
    assert tiny.published("dbrx") is None and tiny.get("dbrx").name == "dbrx"


def test_published_entry_without_config(tmp_path: Path) -> None:
    path = _tiny_db(tmp_path, _GOOD_ENTRY + '\n[dbrx]\nname = "DBRX"\n')
    with pytest.raises(DataFileError) as info:
        load_model_db(path)
    assert (
        str(info.value)
        == f"{path / 'published.toml'}: [dbrx] has no model_db/dbrx.json; add it or drop the entry"
    )


def test_published_bad_count(tmp_path: Path) -> None:
    path = _tiny_db(tmp_path, _GOOD_ENTRY.replace("total_params = 46.7e9", 'total_params = "46.7B"'))
    with pytest.raises(DataFileError) as info:
        load_model_db(path)
    assert str(info.value) == (
        f"{path / 'published.toml'}: [mixtral-8x7b] field 'total_params' must be a positive number, got '46.7B'"
    )


def test_published_missing_convention(tmp_path: Path) -> None:
    path = _tiny_db(tmp_path, _GOOD_ENTRY.replace("active_counts_embedding = true\n", ""))
    with pytest.raises(
        DataFileError, match="field 'active_counts_embedding' must be true or false, got None"
    ):
        load_model_db(path)


def test_published_bad_toml(tmp_path: Path) -> None:
    path = _tiny_db(tmp_path, "[mixtral-8x7b\n")
    with pytest.raises(DataFileError, match="published.toml: is not valid TOML"):
        load_model_db(path)
