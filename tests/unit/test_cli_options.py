"""How --model, --pool and --flip become the feature spec an index records."""

from dataclasses import replace

import pytest

from cbirq.client.indexer import feature_model
from cbirq.embed.families import FAMILIES
from cbirq.embed.specs import FeatureSpec, checkpoint_key, checkpoint_weights
from cbirq.errors import CbirqError
from cbirq.store.sqlite_store import SqliteStore


@pytest.fixture
def store(tmp_path):
    return SqliteStore(tmp_path / "s.sqlite3")


def test_bare_names_take_the_backbone_defaults_and_options_override(store, monkeypatch):
    flipped = replace(FAMILIES["resnet50"], features=FeatureSpec("resnet50", flip=True))
    monkeypatch.setitem(FAMILIES, "resnet50", flipped)
    assert feature_model(store, "resnet50", "none", None, None) == ("resnet50+flip", "none")
    assert feature_model(store, "resnet50", "none", "gem", False) == ("resnet50+gem", "none")
    assert feature_model(store, "resnet50+gem", "none", None, None) == ("resnet50+gem", "none")
    assert feature_model(store, "vgg16", "imagenet", None, None) == ("vgg16", "imagenet")


def test_a_checkpoint_goes_into_the_store_under_its_hash(store, tmp_path):
    (tmp_path / "final.pth").write_bytes(b"checkpoint bytes")
    spec, weights = feature_model(store, f"resnet20:{tmp_path}/final.pth", "imagenet", None, None)
    assert spec.startswith("resnet20") and weights == checkpoint_weights(b"checkpoint bytes")
    assert store.get_artifact(checkpoint_key(weights)) == b"checkpoint bytes"
    with pytest.raises(CbirqError, match="takes no checkpoint: only --model resnet20:PATH"):
        feature_model(store, "resnet50:x.pth", "none", None, None)
