"""Every catalog entry converts a tree that copies its release's real names (tests/data_prep/release_trees.py).

Per entry: the plan (``dry_run``) writes nothing and counts what the conversion then writes; the shards hold the
expected samples, a mask on every sample where the release has masks, the class names and counts, the patients
(none in two splits) and the official split; expected failures (``missing_mask``) are recorded.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from data_prep.catalog import CATALOG, get_entry
from data_prep.convert import Plan, convert, resolve_config
from lvmmed.data.shards import load_arrays, load_manifest
from tests.data_prep.release_trees import TREES, build_tree

FAST = {"workers": 1, "image_size": 16, "skip_empty": False, "slice_step": 1000, "axes": [2]}


def _config(name: str, **extra):
    from data_prep.convert import _yaml_value

    entry = get_entry(name)
    return resolve_config(entry.config, None, [f"{k}={_yaml_value(v)}" for k, v in {**FAST, **extra}.items()])


def test_every_catalog_entry_has_a_release_tree():
    assert sorted(TREES) == sorted(CATALOG)


@pytest.mark.parametrize("name", sorted(TREES))
def test_release_tree_converts(name, tmp_path):
    tree = TREES[name]
    src = build_tree(tmp_path / "src", tree)
    out = tmp_path / "out"
    plan = convert(src, out, _config(name), progress=False, catalog_name=name, dry_run=True)
    assert isinstance(plan, Plan) and not out.exists()  # a dry run writes nothing
    assert plan.counts["patients"] == tree.patients
    assert plan.counts["missing_masks"] == tree.failures.get("missing_mask", 0)
    assert plan.counts["images"] == tree.samples  # one sample per image here (one slice per volume)
    assert plan.counts["classes"] == tree.classes and plan.counts["official_splits"] == tree.official

    result = convert(src, out, _config(name), progress=False, catalog_name=name)
    rows = load_arrays(out)
    metas = [r["meta"] for r in rows]
    assert len(rows) == tree.samples == result.manifest["counts"]["total"]
    if tree.masks:
        assert all(r["mask"] is not None for r in rows)
    if get_entry(name).release.masks and not get_entry(name).release.masks_optional:
        assert tree.masks, f"{name}: the release has masks, so every sample must carry one"
    label_names = load_manifest(out).label_names
    if tree.classes is None:
        assert label_names is None and all(m.get("label_name") is None for m in metas)
    else:
        found = Counter(c for m in metas if m.get("label_name") for c in m["label_name"].split("|"))
        assert dict(found) == tree.classes
        assert set(tree.classes) <= set(label_names)
        for m in metas:
            if m.get("labels") is not None:  # multi-hot over label_names
                assert {label_names[i] for i, v in enumerate(m["labels"]) if v} == set(m["label_name"].split("|"))
            elif m.get("label") is not None:
                assert label_names[m["label"]] == m["label_name"]
    patients = {}
    for m in metas:
        patients.setdefault(m["patient"], set()).add(m["split"])
    assert len(patients) == tree.patients
    assert all(len(splits) == 1 for splits in patients.values())  # no patient in two splits
    official = Counter(m["official_split"] for m in metas if m.get("official_split"))
    assert (dict(official) or None) == tree.official
    failures = Counter(f["kind"] for f in json.loads((out / "failures.json").read_text()) if f["kind"] != "skipped")
    assert dict(failures) == tree.failures
