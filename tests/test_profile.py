import pytest

from intsim.profile import PROFILES, ArithPath, ProfileError, get_profile


def test_builtin_profiles():
    tflm = get_profile("tflm")
    assert tflm.int8 == ArithPath(32, "wrap", 31, "double")
    assert tflm.int16 == ArithPath(64, "wrap", 15, "half_up")
    assert get_profile("single").int8.rounding == "half_up"
    assert get_profile("onnx").int8.rounding == "float32"
    assert get_profile(None) is PROFILES["tflm"]


def test_custom_profile_overrides_both_paths_then_per_path():
    p = get_profile({"name": "dsp", "base": "single", "acc_bits": 24, "acc_overflow": "saturate",
                     "int16": {"acc_bits": 40, "mult_bits": 15}})
    assert p.name == "dsp"
    assert p.int8 == ArithPath(24, "saturate", 31, "half_up")
    assert p.int16 == ArithPath(40, "saturate", 15, "half_up")
    assert get_profile(p.to_dict()) == p


@pytest.mark.parametrize("spec, message", [
    ("nope", "unknown profile"),
    ({"rounding": "stochastic"}, "rounding must be one of"),
    ({"rounding": []}, "rounding must be one of"),
    ({"acc_overflow": {}}, "acc_overflow"),
    ({"acc_overflow": "clip"}, "acc_overflow"),
    ({"acc_bits": 8}, "acc_bits"),
    ({"mult_bits": 40}, "mult_bits"),
    ({"base": "tflm", "acc_bits": 40}, "double"),
    ({"colour": "red"}, "unknown profile fields"),
    ({"int8": 5}, "must be a mapping"),
    (3.5, "a profile is a name or a mapping"),
])
def test_bad_profiles(spec, message):
    with pytest.raises(ProfileError, match=message):
        get_profile(spec)
