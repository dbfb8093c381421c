"""rl._json.jsonable: strict JSON for metrics and CLI output (checked by json.dumps(allow_nan=False))."""

import json
import math

import torch

from rl._json import jsonable


def test_non_finite_floats_and_one_element_tensors_become_strict_json():
    rec = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "x": 1.5, "n": 3, "s": "a", "none": None,
           "t": torch.tensor(2.5), "t1": torch.tensor([float("inf")]), "nested": [(math.nan, 1.0), {"k": -math.inf}]}
    out = json.loads(json.dumps(jsonable(rec), allow_nan=False))
    assert out == {"nan": None, "inf": "inf", "ninf": "-inf", "x": 1.5, "n": 3, "s": "a", "none": None,
                   "t": 2.5, "t1": "inf", "nested": [[None, 1.0], {"k": "-inf"}]}
    assert rec["nan"] != rec["nan"]  # the input is not modified
