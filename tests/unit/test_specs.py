import pytest

from cbirq.embed.specs import FeatureSpec, checkpoint_weights, is_checkpoint, query_spec
from cbirq.errors import BackboneError
from cbirq.rank.options import RankOptions


@pytest.mark.parametrize(
    "text, spec",
    [
        ("resnet50", FeatureSpec("resnet50")),
        ("resnet50+gem", FeatureSpec("resnet50", "gem")),
        ("resnet20+ms", FeatureSpec("resnet20", multiscale=True)),
        ("resnet20+flip", FeatureSpec("resnet20", flip=True)),
        ("efficientnet_lite0+gem+flip+ms", FeatureSpec("efficientnet_lite0", "gem", True, True)),
    ],
)
def test_spec_round_trip(text, spec):
    assert FeatureSpec.parse(text) == spec and str(spec) == text


@pytest.mark.parametrize("text", ["resnet50+max", "+gem", "resnet50+"])
def test_bad_spec_is_refused(text):
    with pytest.raises(BackboneError, match="bad model"):
        FeatureSpec.parse(text)


def test_multiscale_queries_fit_a_library_of_the_same_features_only():
    library = FeatureSpec.parse("resnet50+gem")
    assert FeatureSpec.parse("resnet50+gem+ms").fits(library)
    assert not FeatureSpec.parse("resnet50+ms").fits(library)
    assert str(query_spec("resnet50+gem", RankOptions(multiscale=True))) == "resnet50+gem+ms"
    assert str(query_spec("resnet50", RankOptions())) == "resnet50"


def test_checkpoint_weights_name_the_content():
    name = checkpoint_weights(b"abc")
    assert is_checkpoint(name) and name == checkpoint_weights(b"abc")
    assert name != checkpoint_weights(b"abd") and not is_checkpoint("imagenet")


def test_the_qe_ratio_is_named_and_sent_only_when_set():
    options = RankOptions(center=True, qe=10, qe_ratio=0.9)
    assert options.describe() == "centred, alpha-QE over the top 10 within 0.9 of the best"
    assert RankOptions(**options.as_dict()) == options
    # Off, it is left out: a worker of an earlier release takes RankOptions(**options).
    assert "qe_ratio" not in RankOptions(center=True, qe=10).as_dict()
