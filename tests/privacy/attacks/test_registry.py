"""One registry of attacks: every attack is there with its callable and threat model; names are
refused when duplicated or unknown."""

import doctest

import pytest

import splitlearn.privacy.attacks as attacks_module
from splitlearn.privacy.attacks import (
    ATTACKS,
    attack,
    hijacking,
    inversion,
    label_leakage,
    model_completion,
    reconstruction,
    register_attack,
    threat_model_of,
)


def test_every_attack_is_registered_with_its_callable_and_threat_model():
    expected = {
        "reconstruction": (reconstruction.reconstruction_attack, "inputs", reconstruction),
        "inversion": (inversion.inversion_attack, "inputs", inversion),
        "hijacking": (hijacking.hijack, "inputs", hijacking),
        "label_norm": (label_leakage.norm_scores, "labels", label_leakage),
        "label_direction": (label_leakage.direction_scores, "labels", label_leakage),
        "label_clustering": (label_leakage.cluster_accuracy, "labels", label_leakage),
        "model_completion": (model_completion.model_completion_attack, "labels", model_completion),
    }
    assert set(ATTACKS) == set(expected)
    for name, (run, target, module) in expected.items():
        entry = attack(name)
        assert entry.name == name and entry.run is run and entry.target == target
        assert entry.threat_model == threat_model_of(module) and len(entry.threat_model) > 200
        assert "\n" not in entry.threat_model and entry.method
    # Who attacks, what they see, what they hold, in each text.
    assert "auxiliary data" in attack("reconstruction").threat_model
    assert "no auxiliary data" in attack("inversion").threat_model and "architecture" in attack("inversion").threat_model
    assert "labels of a handful" in attack("model_completion").threat_model
    assert "gradient at its cut" in attack("label_norm").threat_model
    assert "malicious server" in attack("hijacking").threat_model and "public data" in attack("hijacking").threat_model


def test_duplicate_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="attack 'inversion' is already registered"):
        register_attack("inversion", lambda: None, target="inputs", method="m", threat_model="t")
    with pytest.raises(ValueError, match="unknown attack 'fsha'; known attacks: hijacking, inversion, label_clustering"):
        attack("fsha")
    with pytest.raises(ValueError, match="target must be one of"):
        register_attack("probe", lambda: None, target="weights", method="m", threat_model="t")
    with pytest.raises(ValueError, match="needs a non-empty threat_model"):
        register_attack("probe", lambda: None, target="inputs", method="m", threat_model=" ")
    with pytest.raises(ValueError, match="lowercase"):
        register_attack("Probe", lambda: None, target="inputs", method="m", threat_model="t")
    assert "probe" not in ATTACKS  # refused registrations leave nothing behind
    with pytest.raises(TypeError):
        ATTACKS["probe"] = None  # the public view is read-only


def test_a_new_attack_registers_once(monkeypatch):
    monkeypatch.setattr(attacks_module, "_ATTACKS", dict(attacks_module._ATTACKS))  # leave the real registry alone
    entry = attacks_module.register_attack("probe", print, target="labels", method="m", threat_model="someone")
    assert attacks_module.attack("probe") is entry
    with pytest.raises(ValueError, match="already registered"):
        attacks_module.register_attack("probe", print, target="labels", method="m", threat_model="someone")


def test_a_module_without_a_threat_model_is_refused():
    with pytest.raises(ValueError, match="states no threat model"):
        threat_model_of(doctest)


def test_doctests():
    result = doctest.testmod(attacks_module)
    assert result.attempted > 0 and result.failed == 0
